#!/usr/bin/env python3
"""Benchmark: rotor-init time from start to execve and peak RSS, against a local OpenBao.

Builds the static release binary the way CI and Dockerfile.init do, starts `bao server -dev` on a
free loopback port, and for 1/10/100 references over 1/5/50 paths runs `rotor-init -- true`
repeatedly (token auth). The wall time includes exec of `true` (under a millisecond), so it bounds
start-to-execve from above. Prints a Markdown table for BENCHMARKS.md.
Usage: python3 scripts/bench_init.py [RUNS]
"""
import json, os, platform, socket, statistics, subprocess, sys, tempfile, time, urllib.request

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "bench-root"

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def api(addr, method, path, body=None):
    req = urllib.request.Request(f"{addr}/v1/{path}", method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"X-Vault-Token": TOKEN, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read()

def main():
    env = dict(os.environ, RUSTFLAGS="-C target-feature=+crt-static")
    subprocess.run(["cargo", "build", "--locked", "-q", "-p", "rotor-init", "--profile", "release-init",
                    "--target", "x86_64-unknown-linux-gnu"], cwd=ROOT, env=env, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "x86_64-unknown-linux-gnu/release-init/rotor-init")
    size = os.path.getsize(binary)
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    home = tempfile.mkdtemp()
    bao = subprocess.Popen([os.path.join(ROOT, ".tools/bin/bao"), "server", "-dev", f"-dev-root-token-id={TOKEN}",
                            f"-dev-listen-address=127.0.0.1:{port}", "-dev-no-store-token", "-log-level=error"],
                           env=dict(os.environ, HOME=home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1); break
            except Exception:
                time.sleep(0.1)
        for p in range(50):
            api(addr, "POST", f"secret/data/bench/p{p}", {"data": {f"k{k}": f"value-{p}-{k}" for k in range(2)}})
        rows = []
        for refs, paths in [(1, 1), (10, 5), (100, 50)]:
            run_env = {"PATH": "/usr/bin:/bin", "ROTOR_ADDR": addr, "ROTOR_AUTH_METHOD": "token", "ROTOR_TOKEN": TOKEN,
                       "ROTOR_LOG_LEVEL": "warn"}
            for i in range(refs):
                run_env[f"SECRET_{i}"] = f"vault:secret/data/bench/p{i % paths}#k{(i // paths) % 2}"
            times, rss = [], []
            for _ in range(RUNS):
                start = time.perf_counter()
                out = subprocess.run(["/usr/bin/time", "-f", "%M", binary, "--", "true"], env=run_env,
                                     capture_output=True, text=True)
                times.append((time.perf_counter() - start) * 1000)
                if out.returncode != 0:
                    sys.exit(f"rotor-init failed: {out.stderr}")
                rss.append(int(out.stderr.strip().splitlines()[-1]))
            times.sort()
            rows.append((refs, paths, statistics.median(times), times[int(len(times) * 0.9) - 1], max(rss) / 1024))
        print(f"command: python3 scripts/bench_init.py {RUNS}  date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
              f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
        print(f"binary: {binary} {size} bytes ({size / 1048576:.2f} MiB), static, stripped\n")
        print("| references | paths | median ms (start to exit of `true`) | p90 ms | peak RSS MiB |")
        print("| --- | --- | --- | --- | --- |")
        for refs, paths, med, p90, mib in rows:
            print(f"| {refs} | {paths} | {med:.1f} | {p90:.1f} | {mib:.1f} |")
    finally:
        bao.terminate(); bao.wait(timeout=10)

main()
