"""Benchmarks 1 and 2: sweep throughput beside what the machine allows, and the naive one-at-a-time loop.

The local Gemini-REST server (its own process) answers every request after a fixed latency, over
connections kept open between requests as the real API's are (``--keep-alive``: google-genai pools its
connections, so a user's sweep pays no TCP handshake per request). A sweep of
N requests (N distinct images × the structured-JSON prompt) runs at each concurrency through the real
path — ``Sweep`` → ``run_sweep`` → ``GeminiProvider`` (google-genai over HTTP) — with a fresh answer
cache and MLflow store. Each concurrency reports, from one run:

* the ideal, concurrency ÷ latency;
* a bare async client (aiohttp, the SDK's own transport) posting the same request bodies to the same
  server at the same concurrency, with nothing else to do: what this machine allows;
* the sweep's request-phase rate (first candidate started → last example scored) and its ratio to
  the bare client — the figure the target is on;
* the sweep's end-to-end rate (``Sweep`` construction and ``Sweep.run``, MLflow set-up and logging
  included) and that fixed start-up on its own (load + run − request phase).

At the target concurrency the sweep runs a second time with ``PROMPTGRADE_GEMINI_CONVERT_PER_CALL=1``
(the SDK's public ``generate_content`` on every call), so the saving of per-candidate request
templates (``providers/gemini_wire.py``) is measured side by side in the same run.

The naive way is the original study's Lambda loop, reconstructed: one synchronous google-genai call at
a time, retry-and-sleep on any exception. It runs over the first ``--naive-requests`` of the same
images with the same prompt and settings (its rate does not depend on how many it does, so a few
hundred give the rate without spending minutes), and the speed-up is measured in the same run.

The test suite's stand-in opens one connection per request instead (so a fault leaves no pooled
socket behind). That costs every client a TCP handshake and the server a new thread per request —
py-spy put the connect at a quarter of the sweep's event-loop CPU — and bunches the answers: against
it the bare client and the sweep both lose speed, the sweep more. So the default sweep and the bare
client also run once more against such a server, side by side, and both ratios are reported.

To tell whether the ThreadingHTTPServer is the bottleneck, the server's own CPU time is read from
/proc during each sweep and each bare-client run.

    .venv/bin/python benchmarks/throughput.py            # 2,000 requests at 8, 32, 64; 200 naive
    .venv/bin/python benchmarks/throughput.py --quick    # 400 requests, 40 naive (a smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    FAKE_API_KEY,
    Check,
    Report,
    ServerProcess,
    Timeline,
    command_line,
    isolated_env,
    load_note,
    migrate_store,
    synthetic_folder,
    write_experiment,
)

PROMPT = "meal_tray_json@1"
MODEL = "gemini-2.5-flash"


def sweep_once(
    dataset: Path,
    n: int,
    concurrency: int,
    server: ServerProcess,
    tmp: Path,
    *,
    per_call: bool = False,
    traces: bool = True,
) -> dict[str, Any]:
    from promptgrade.cache import AnswerCache
    from promptgrade.runner import CacheMode
    from promptgrade.sweep import Sweep
    from promptgrade.tracking import writer

    writer.shutdown()  # each sweep starts its own tracking writer, as `promptgrade sweep` does

    with isolated_env(tmp) as env:
        if per_call:
            os.environ["PROMPTGRADE_GEMINI_CONVERT_PER_CALL"] = "1"
        experiment = write_experiment(
            tmp / "exp.yaml",
            dataset=dataset,
            base_url=server.base_url,
            prompts=[PROMPT],
            concurrency=concurrency,
            limit=n,
            name=f"throughput-c{concurrency}",
        )
        with experiment.open("a", encoding="utf-8") as handle:
            handle.write(f"trace_examples: {str(traces).lower()}\n")
        migrate_store(env["MLFLOW_TRACKING_URI"])
        loaded = time.perf_counter()
        writer.prestart()  # as the CLI does: the writer's imports overlap with loading the dataset
        sweep = Sweep(experiment)
        load_s = time.perf_counter() - loaded
        sweep.connect()
        server_cpu: list[float] = []
        timeline = Timeline(
            expected=n,
            on_first=lambda: server_cpu.append(server.cpu_seconds()),
            on_last=lambda: server_cpu.append(server.cpu_seconds()),
        )
        cache = CacheMode(AnswerCache(env["PROMPTGRADE_CACHE"]))
        started = time.perf_counter()
        try:
            report = sweep.run(tracking_uri=env["MLFLOW_TRACKING_URI"], listeners=[timeline], cache=cache)
        finally:
            os.environ.pop("PROMPTGRADE_GEMINI_CONVERT_PER_CALL", None)
        end_to_end = time.perf_counter() - started
    assert timeline.cpu_started is not None
    seconds = timeline.seconds
    [result] = report.results
    latencies = sorted(o.latency_ms or 0.0 for o in result.outcomes)
    distinct_images = len({e.image.sha256 for e in sweep.dataset.examples})
    client_cpu = timeline.cpu_last_done - timeline.cpu_started
    latency_s = server.latency_s
    return {
        "concurrency": concurrency,
        "convert_per_call": per_call,
        "traces": traces,
        "latency_s": latency_s,
        "ideal_per_s": concurrency / latency_s,
        "achievable_per_s": n / (math.ceil(n / concurrency) * latency_s),
        "requests": result.calls,
        "examples": len(sweep.dataset.examples),
        "distinct_images": distinct_images,
        "statuses": timeline.statuses,
        "dataset_load_s": load_s,
        "request_phase_s": seconds,
        "end_to_end_s": end_to_end,
        "rate_per_s": n / seconds,
        "end_to_end_s_with_load": load_s + end_to_end,
        "end_to_end_rate_per_s": n / (load_s + end_to_end),
        "fixed_startup_s": load_s + end_to_end - seconds,
        "client_cpu_cores": client_cpu / seconds,
        "client_cpu_ms_per_request": client_cpu / n * 1000,
        # one event loop serialises each wave of responses: rate ≈ C / (latency + C × CPU per request)
        "wave_model_per_s": concurrency / (latency_s + concurrency * client_cpu / n),
        "server_cpu_cores": (server_cpu[1] - server_cpu[0]) / seconds,
        "server_cpu_ms_per_request": (server_cpu[1] - server_cpu[0]) / n * 1000,
        "client_latency_ms_p50": statistics.median(latencies),
        "client_latency_ms_p95": latencies[int(0.95 * (len(latencies) - 1))],
    }, sweep


def naive_loop(sweep: Any, server: ServerProcess, n: int) -> dict[str, Any]:
    """The study's Lambda, reconstructed: one call at a time; on any exception sleep and try again."""
    from google import genai
    from google.genai import types

    from promptgrade.answers import Prediction, parse_answer

    candidate = sweep.candidates[0]
    task = sweep.plan.task
    settings = candidate.settings
    client = genai.Client(api_key=FAKE_API_KEY, http_options=types.HttpOptions(base_url=server.base_url))
    config = types.GenerateContentConfig(
        temperature=settings.temperature,
        max_output_tokens=settings.max_output_tokens,
        response_mime_type="application/json",
        response_json_schema=task.response_schema(),
    )
    examples = sweep.dataset.examples[:n]
    parsed = retries = 0
    started = time.perf_counter()
    for example in examples:
        for attempt in range(5):
            try:
                response = client.models.generate_content(
                    model=MODEL,
                    contents=[
                        types.Part.from_bytes(data=example.image.data, mime_type=example.image.mime_type),
                        types.Part.from_text(text=candidate.rendered_prompt),
                    ],
                    config=config,
                )
                break
            except Exception:
                retries += 1
                time.sleep(2**attempt)
        else:
            continue
        parsed += isinstance(parse_answer(response.text, task), Prediction)
    seconds = time.perf_counter() - started
    return {
        "requests": len(examples),
        "seconds": seconds,
        "rate_per_s": len(examples) / seconds,
        "parsed": parsed,
        "retries": retries,
    }


def request_bodies(sweep: Any, server: ServerProcess) -> tuple[str, list[bytes]]:
    """The exact JSON bodies the sweep sends (the SDK's own conversion, via the provider's templates)."""
    from google import genai
    from google.genai import types

    from promptgrade.grading import build_request
    from promptgrade.providers.gemini import _config
    from promptgrade.providers.gemini_wire import RequestTemplates

    candidate = sweep.candidates[0]
    client = genai.Client(api_key=FAKE_API_KEY, http_options=types.HttpOptions(base_url=server.base_url))
    templates = RequestTemplates(client.aio._api_client, MODEL)
    bodies = []
    for example in sweep.dataset.examples:
        request = build_request(candidate.rendered_prompt, sweep.plan.task, candidate.settings, example.image)
        template = templates.request(request, _config(request), ("bench",))
        bodies.append(json.dumps(template.fill(request.image.data)).encode())
    return f"{server.base_url}/v1beta/{template.path}", bodies


def bare_client(url: str, bodies: list[bytes], concurrency: int, server: ServerProcess) -> dict[str, Any]:
    """What the machine allows: aiohttp posting prepared bodies, ``concurrency`` in flight, nothing else."""
    import aiohttp

    async def main() -> tuple[float, int]:
        ok = 0
        queue = iter(bodies)
        headers = {"Content-Type": "application/json", "x-goog-api-key": FAKE_API_KEY}

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal ok
            for body in queue:
                async with session.post(url, data=body, headers=headers) as response:
                    payload = json.loads(await response.read())
                    ok += response.status == 200 and "candidates" in payload

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            started = time.perf_counter()
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
            return time.perf_counter() - started, ok

    return {
        "concurrency": concurrency,
        **timed(server, len(bodies), lambda: asyncio.run(main())),
        "ideal_per_s": concurrency / server.latency_s,
    }


def timed(server: ServerProcess, total: int, run: Callable[[], tuple[float, int]]) -> dict[str, Any]:
    """``run`` (returning its seconds and how many answers were right), with its rate and both sides' CPU."""
    cpu = server.cpu_seconds()
    client_cpu = time.process_time()
    seconds, ok = run()
    return {
        "requests": total,
        "ok": ok,
        "rate_per_s": total / seconds,
        "server_cpu_cores": (server.cpu_seconds() - cpu) / seconds,
        "client_cpu_ms_per_request": (time.process_time() - client_cpu) / total * 1000,
    }


def sdk_alone(sweep: Any, server: ServerProcess, concurrency: int) -> dict[str, Any]:
    """The sweep's own provider (google-genai, request templates) over the sweep's requests, nothing else.

    No runner, cache, limiter, retries, parsing, scoring or tracking writer: what any program calling
    google-genai the way the sweep does gets on this machine — the ceiling the request phase is held to,
    between the bare client (no SDK) and the sweep (the SDK and promptgrade).
    """
    from promptgrade.grading import build_request
    from promptgrade.providers.gemini import GeminiProvider

    candidate = sweep.candidates[0]
    requests = [
        build_request(candidate.rendered, sweep.plan.task, candidate.settings, example.image)
        for example in sweep.dataset.examples
    ]

    async def main() -> tuple[float, int]:
        provider = GeminiProvider(MODEL, base_url=server.base_url, api_key=FAKE_API_KEY)
        queue = iter(requests)
        ok = 0

        async def worker() -> None:
            nonlocal ok
            for request in queue:
                completion = await provider.complete(request)
                ok += completion.error is None

        try:
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - started, ok
        finally:
            await provider.aclose()

    return {
        "concurrency": concurrency,
        **timed(server, len(requests), lambda: asyncio.run(main())),
        "load": load_note(),
    }


def show(run: dict[str, Any], bare: dict[str, Any] | None = None) -> None:
    run["ratio_to_ideal"] = run["rate_per_s"] / run["ideal_per_s"]
    run["end_to_end_ratio_to_ideal"] = run["end_to_end_rate_per_s"] / run["ideal_per_s"]
    run["load"] = load_note()
    if bare is not None:
        run["bare_client_per_s"] = bare["rate_per_s"]
        run["ratio_to_bare_client"] = run["rate_per_s"] / bare["rate_per_s"]
    against = (
        f"; bare client {bare['rate_per_s']:.1f} req/s, sweep ÷ bare {run['ratio_to_bare_client']:.3f}"
        if bare is not None
        else ""
    )
    mode = " [SDK conversion per call]" if run.get("convert_per_call") else ""
    mode += " [one connection per request]" if run.get("one_connection_per_request") else ""
    mode += "" if run.get("traces", True) else " [traces off]"
    print(
        f"  concurrency {run['concurrency']}{mode}, latency {run['latency_s'] * 1000:.0f} ms, {run['requests']} requests: "
        f"request phase {run['rate_per_s']:.1f} req/s of ideal {run['ideal_per_s']:.0f} (ratio {run['ratio_to_ideal']:.3f}"
        f"{against}); end to end {run['end_to_end_rate_per_s']:.1f} req/s (fixed start-up {run['fixed_startup_s']:.2f} s); "
        f"client CPU {run['client_cpu_cores']:.2f} cores = {run['client_cpu_ms_per_request']:.2f} ms/req "
        f"(wave model {run['wave_model_per_s']:.1f} req/s); server CPU {run['server_cpu_cores']:.2f} cores "
        f"({run['server_cpu_ms_per_request']:.2f} ms/req); client-side latency p50 {run['client_latency_ms_p50']:.0f} ms, "
        f"p95 {run['client_latency_ms_p95']:.0f} ms; statuses {run['statuses']}; {run['load']}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1280)
    parser.add_argument(
        "--small-requests",
        type=int,
        default=160,
        help="a small default sweep beside the large one: their difference is the marginal rate",
    )
    parser.add_argument("--latency", type=float, default=0.2, help="server latency, seconds")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--naive-requests", type=int, default=200)
    parser.add_argument(
        "--long-latency",
        type=float,
        default=1.0,
        help="also sweep at concurrency 32 with this server latency (0: skip), closer to a real model's",
    )
    parser.add_argument("--long-requests", type=int, default=640)
    parser.add_argument("--quick", action="store_true", help="400 requests, 40 naive")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.naive_requests = 400, 40
    report = Report("throughput", command_line())
    print(f"throughput: {args.requests} requests, latency {args.latency * 1000:.0f} ms ({load_note()})")
    dataset = synthetic_folder(args.requests)
    runs: list[dict[str, Any]] = []
    bares: list[dict[str, Any]] = []
    target_c = 32 if 32 in args.concurrency else max(args.concurrency)
    per_call_run = traces_off_run = small_run = sdk = None
    with (
        ServerProcess(args.latency, keep_alive=True) as server,
        tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp,
    ):
        sweep = None
        url: str | None = None
        bodies: list[bytes] = []
        for concurrency in args.concurrency:
            run, sweep = sweep_once(
                dataset, args.requests, concurrency, server, Path(tmp) / f"c{concurrency}"
            )
            if url is None:
                url, bodies = request_bodies(sweep, server)
            bare = bare_client(url, bodies, concurrency, server)
            bare["load"] = load_note()
            bares.append(bare)
            runs.append(run)
            show(run, bare)
            if concurrency == target_c:
                sdk = sdk_alone(sweep, server, concurrency)
                print(
                    f"  google-genai alone (the sweep's provider, nothing else) at concurrency {concurrency}: "
                    f"{sdk['rate_per_s']:.1f} req/s = {sdk['rate_per_s'] / bare['rate_per_s']:.3f} of the bare "
                    f"client ({sdk['ok']} ok); client CPU {sdk['client_cpu_ms_per_request']:.2f} ms/req; {sdk['load']}",
                    flush=True,
                )
                per_call_run, _ = sweep_once(
                    dataset, args.requests, concurrency, server, Path(tmp) / "per-call", per_call=True
                )
                show(per_call_run, bare)
                traces_off_run, _ = sweep_once(
                    dataset, args.requests, concurrency, server, Path(tmp) / "traces-off", traces=False
                )
                show(traces_off_run, bare)
                small_run, _ = sweep_once(
                    dataset, args.small_requests, concurrency, server, Path(tmp) / "small"
                )
                show(small_run)
        assert sweep is not None
        naive = naive_loop(sweep, server, args.naive_requests)
        naive["load"] = load_note()
        print(
            f"  naive (one at a time, retry-and-sleep): {naive['rate_per_s']:.2f} req/s over {naive['requests']} "
            f"requests ({naive['parsed']} parsed, {naive['retries']} retries); {naive['load']}",
            flush=True,
        )

    # the same default sweep and bare client against a server that opens one connection per request
    with ServerProcess(args.latency) as closing, tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp:
        per_connection, closing_sweep = sweep_once(
            dataset, args.requests, target_c, closing, Path(tmp) / "per-connection"
        )
        per_connection["one_connection_per_request"] = True
        closing_bare = bare_client(*request_bodies(closing_sweep, closing), target_c, closing)
        closing_bare["load"] = load_note()
        show(per_connection, closing_bare)

    long_run = None
    if args.long_latency > 0:
        long_dataset = synthetic_folder(args.long_requests)
        with (
            ServerProcess(args.long_latency, keep_alive=True) as slow,
            tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp,
        ):
            long_run, _ = sweep_once(long_dataset, args.long_requests, 32, slow, Path(tmp) / "long")
        show(long_run)

    by_c = {r["concurrency"]: r for r in runs}
    report.figures = {
        "long_latency_sweep": long_run,
        "requests": args.requests,
        "latency_s": args.latency,
        "sweeps": runs,
        "bare_client": bares,
        "sweep_with_sdk_conversion_per_call": per_call_run,
        "one_connection_per_request": {"sweep": per_connection, "bare_client": closing_bare},
        "sdk_alone": sdk,
        "naive": naive,
        "speedup_vs_naive": {str(c): by_c[c]["rate_per_s"] / naive["rate_per_s"] for c in by_c},
    }
    for c, speedup in report.figures["speedup_vs_naive"].items():
        print(f"  speed-up over naive at concurrency {c}: {speedup:.1f}x")
    run = by_c[target_c]
    if sdk is not None:
        # where the request phase's client CPU goes, per request, all from this run at the target concurrency
        bare_cpu = bares[list(by_c).index(target_c)]["client_cpu_ms_per_request"]
        sdk_cpu, sweep_cpu = sdk["client_cpu_ms_per_request"], run["client_cpu_ms_per_request"]
        sdk["ratio_to_bare_client"] = sdk["rate_per_s"] / run["bare_client_per_s"]
        sdk["sweep_ratio_to_sdk_alone"] = run["rate_per_s"] / sdk["rate_per_s"]
        report.figures["client_cpu_ms_per_request"] = {
            "bare_client": bare_cpu,
            "google_genai": sdk_cpu - bare_cpu,
            "promptgrade": sweep_cpu - sdk_cpu,
            "sweep": sweep_cpu,
        }
        print(
            f"  client CPU per request at concurrency {target_c}: bare aiohttp {bare_cpu:.2f} ms; google-genai "
            f"+{sdk_cpu - bare_cpu:.2f} ms ({sdk_cpu:.2f}, {sdk['ratio_to_bare_client']:.3f} of the bare client's "
            f"rate); promptgrade's runner, cache, parsing, scoring and writer hand-over +{sweep_cpu - sdk_cpu:.2f} ms "
            f"({sweep_cpu:.2f}, {run['ratio_to_bare_client']:.3f}); the sweep ÷ google-genai alone "
            f"{sdk['sweep_ratio_to_sdk_alone']:.3f}"
        )
    if per_call_run is not None:
        gain = run["rate_per_s"] / per_call_run["rate_per_s"]
        report.figures["request_templates_speedup"] = gain
        print(
            f"  request templates vs SDK conversion per call at concurrency {target_c}: {gain:.2f}x "
            f"({per_call_run['client_cpu_ms_per_request']:.2f} → {run['client_cpu_ms_per_request']:.2f} ms "
            "client CPU per request)"
        )
    if small_run is not None and traces_off_run is not None:
        # The default sweep as a user runs it (traces and plots on, a cold writer): the marginal rate
        # between a small and a large sweep, so fixed start-up cancels; and that start-up on its own.
        large_s, small_s = run["end_to_end_s_with_load"], small_run["end_to_end_s_with_load"]
        marginal = (args.requests - args.small_requests) / (large_s - small_s)
        startup = small_s - args.small_requests / marginal
        off_marginal = args.requests / traces_off_run["end_to_end_s_with_load"]
        report.figures["default_sweep"] = {
            "marginal_rate_per_s": marginal,
            "bare_client_per_s": run["bare_client_per_s"],
            "ratio_to_bare_client": marginal / run["bare_client_per_s"],
            "small_sweep_fixed_startup_s": startup,
            "traces_off_end_to_end_per_s": off_marginal,
            "traces_on_end_to_end_per_s": args.requests / large_s,
        }
        print(
            f"  default sweep (traces and plots on) at concurrency {target_c}: marginal rate {marginal:.1f} "
            f"req/s = {marginal / run['bare_client_per_s']:.3f} of the bare client; fixed start-up of a "
            f"{args.small_requests}-request sweep {startup:.2f} s; end to end {args.requests / large_s:.1f} "
            f"req/s with traces, {off_marginal:.1f} without"
        )
        report.check(
            Check(
                f"default sweep (traces on), marginal rate ÷ bare client at concurrency {target_c}",
                marginal / run["bare_client_per_s"],
                0.8,
                "of the bare client",
                higher=True,
                note=f"{marginal:.1f} of {run['bare_client_per_s']:.1f} req/s",
            )
        )
        report.check(
            Check(
                f"fixed start-up of a {args.small_requests}-request sweep",
                startup,
                6.0,
                "s",
                higher=False,
                note="writer start, dataset load, MLflow set-up and the last candidate's logging",
            )
        )
    report.check(
        Check(
            f"sweep request phase ÷ bare client at concurrency {target_c}",
            run["ratio_to_bare_client"],
            0.9,
            "of the bare client",
            higher=True,
            note=f"{run['rate_per_s']:.1f} of {run['bare_client_per_s']:.1f} req/s (ideal {run['ideal_per_s']:.0f})",
        )
    )
    report.check(
        Check(
            f"throughput at concurrency {target_c} / ideal",
            run["ratio_to_ideal"],
            0.9,
            "of ideal",
            higher=True,
            note=f"{run['rate_per_s']:.1f} of {run['ideal_per_s']:.0f} req/s",
        )
    )
    top_run = by_c[max(args.concurrency)]
    verdict = (
        f"server CPU during the sweep at concurrency {top_run['concurrency']}: "
        f"{top_run['server_cpu_cores']:.2f} cores (of ~1, one GIL)"
    )
    report.notes.append(verdict)
    print(f"  {verdict}")
    report.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
