#!/usr/bin/env python3
"""Start llama.cpp's HTTP server (llama-server) in-process via the xllamacpp wheel.

Run it with the python of a venv that has `xllamacpp` installed:

    llama_server.py --model PATH --port N [--ctx 2048] [--parallel 4] [--threads 2]

The server listens on 127.0.0.1:N only, keeps the KV cache in f32, runs with flash
attention off (so scores stay close to a plain f32 reference), and gives every one of
the --parallel slots its own --ctx tokens of context (total KV = ctx * parallel).

Once GET /health answers 200 it prints exactly one line to stdout:

    ready http://127.0.0.1:N

and then blocks until SIGTERM or SIGINT, when it stops the server and exits 0.
If the model cannot be loaded (or the port cannot be bound) it prints a message
to stderr and exits 2.
llama.cpp's own log goes to stderr.
"""

import argparse
import os
import signal
import sys
import threading
import time
import urllib.request


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="path to a .gguf model file")
    ap.add_argument("--port", required=True, type=int, help="TCP port on 127.0.0.1")
    ap.add_argument("--ctx", type=int, default=2048, help="context tokens per slot")
    ap.add_argument("--parallel", type=int, default=4, help="number of slots")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for compute")
    return ap.parse_args(argv)


def wait_health(url, timeout_s=60.0):
    """Poll GET /health until it answers 200 (it answers 503 while loading)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass  # connection refused / 503 (HTTPError is an OSError) -> retry
        time.sleep(0.1)
    return False


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(args.model):
        print(f"error: model file not found: {args.model}", file=sys.stderr)
        return 2
    if args.ctx < 1 or args.parallel < 1 or args.threads < 1 or not 0 < args.port < 65536:
        print("error: --ctx, --parallel, --threads must be >= 1 and --port in 1..65535",
              file=sys.stderr)
        return 2

    # The wheel's ggml uses OpenMP. Its default spin-waiting makes decoding stall for
    # seconds when the cores are shared (e.g. with a cargo build on a 2-core box);
    # sleeping waits avoid that. Must be set before the library is loaded.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import xllamacpp as xlc  # imported late so --help works without the wheel

    p = xlc.CommonParams()
    p.model.path = args.model
    p.hostnames = ["127.0.0.1"]          # loopback only
    p.port = args.port
    p.n_parallel = args.parallel
    p.kv_unified = False                 # each slot owns n_ctx / n_parallel tokens ...
    p.n_ctx = args.ctx * args.parallel   # ... so every slot gets exactly --ctx
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    p.n_threads_http = args.parallel + 2  # default would be one per CPU core
    p.flash_attn_type = xlc.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    p.cache_type_k = xlc.ggml_type.GGML_TYPE_F32
    p.cache_type_v = xlc.ggml_type.GGML_TYPE_F32
    p.fit_params = False                 # never shrink ctx/params behind our back
    p.cache_ram_mib = 256                # host-RAM prompt cache (default is 8 GiB)
    p.ui = False                         # no web UI at /
    p.n_gpu_layers = 0                   # CPU only

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    try:
        # Blocks until the model is loaded and the HTTP listener is up;
        # raises RuntimeError when loading fails.
        server = xlc.Server(p)
    except Exception as e:  # noqa: BLE001 - report any load failure the same way
        print(f"error: llama server failed to start (model {args.model!r}, "
              f"127.0.0.1:{args.port}): {e} (see llama.cpp log above)", file=sys.stderr)
        return 2

    url = f"http://127.0.0.1:{args.port}"
    if not wait_health(url):
        print(f"error: {url}/health never answered 200", file=sys.stderr)
        del server
        return 2
    if not stop.is_set():  # a signal during loading means: just shut down
        print(f"ready {url}", flush=True)

    while not stop.wait(0.5):  # short waits keep Python's signal handling responsive
        pass
    del server  # the C++ ~Server() ends the slot loop and the HTTP listener, then joins
    return 0


if __name__ == "__main__":
    sys.exit(main())
