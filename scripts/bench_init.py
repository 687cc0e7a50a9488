#!/usr/bin/env python3
"""Benchmark: rotor-init from start to execve, against local OpenBao dev servers (http and https).

Builds the static release binary the way CI and Dockerfile.init do, starts `bao server -dev` on
free loopback ports (one plain, one with -dev-tls), and for 1/10/100 references over 1/5/50 paths
runs `rotor-init -- true` repeatedly (token auth). The wall time includes exec of `true` (under a
millisecond), so it bounds start-to-execve from above. For 10 references over 5 paths it also
counts the store requests (through a counting proxy) and the instructions to execve (callgrind,
with a command that does not exist, so the process ends at the failed execve and the profile is
written). Prints Markdown for BENCHMARKS.md.
Usage: python3 scripts/bench_init.py [RUNS]
"""
import http.client, http.server, json, os, platform, re, socket, statistics, subprocess, sys, tempfile, threading, time
import urllib.request, ssl

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "bench-root"

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def start_bao(tls):
    port, home = free_port(), tempfile.mkdtemp()
    args = [os.path.join(ROOT, ".tools/bin/bao"), "server", "-dev", f"-dev-root-token-id={TOKEN}",
            f"-dev-listen-address=127.0.0.1:{port}", "-dev-no-store-token", "-log-level=error"]
    if tls:
        os.makedirs(f"{home}/tls")
        args += ["-dev-tls", f"-dev-tls-cert-dir={home}/tls"]
    bao = subprocess.Popen(args, env=dict(os.environ, HOME=home, BAO_ADDR=""), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    addr = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    ca = f"{home}/tls/vault-ca.pem" if tls else None
    for _ in range(200):
        try:
            ctx = ssl.create_default_context(cafile=ca) if tls and os.path.exists(ca) else None
            if tls and ctx is None:
                raise OSError("no CA yet")
            urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1, context=ctx); break
        except Exception:
            time.sleep(0.1)
    else:
        bao.terminate(); bao.wait(timeout=10)
        sys.exit(f"bao at {addr} did not start")
    return bao, addr, ca

def api(addr, ca, method, path, body=None):
    ctx = ssl.create_default_context(cafile=ca) if ca else None
    req = urllib.request.Request(f"{addr}/v1/{path}", method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"X-Vault-Token": TOKEN, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
        return r.read()

class CountingProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to a plain-HTTP store and counts them."""
    def __init__(self, target_port):
        self.target_port, self.count = target_port, 0
        lock = threading.Lock()
        proxy = self
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *args):
                pass
            def forward(self):
                with lock:
                    proxy.count += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=10)
                conn.request(self.command, self.path, body=body or None,
                             headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.getheader("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()
            do_GET = do_POST = do_PUT = forward
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

def reference_env(addr, ca, refs, paths):
    env = {"PATH": "/usr/bin:/bin", "ROTOR_ADDR": addr, "ROTOR_AUTH_METHOD": "token", "ROTOR_TOKEN": TOKEN,
           "ROTOR_LOG_LEVEL": "warn"}
    if ca:
        env["ROTOR_CACERT"] = ca
    for i in range(refs):
        env[f"SECRET_{i}"] = f"vault:secret/data/bench/p{i % paths}#k{(i // paths) % 2}"
    return env

def timed_runs(binary, env):
    times, rss = [], []
    for _ in range(RUNS):
        start = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%M", binary, "--", "true"], env=env, capture_output=True, text=True)
        times.append((time.perf_counter() - start) * 1000)
        if out.returncode != 0:
            sys.exit(f"rotor-init failed: {out.stderr}")
        rss.append(int(out.stderr.strip().splitlines()[-1]))
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9) - 1], max(rss) / 1024

def instructions_to_execve(binary, env):
    """Instructions until execve, from callgrind: the command does not exist, so rotor-init's
    execve fails (exit 127) right where the app would start, and the profile gets written."""
    out_file = tempfile.mktemp(prefix="rotor-init-callgrind.")
    run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", binary, "--",
                          "/nonexistent/app"], env=env, capture_output=True, text=True)
    if run.returncode != 127:
        sys.exit(f"expected exit 127 at the failed execve, got {run.returncode}: {run.stderr[-2000:]}")
    with open(out_file) as f:
        total = next(int(line.split()[1]) for line in f if line.startswith("totals:"))
    os.unlink(out_file)
    return total

def connections_to(binary, env, port):
    """TCP connections rotor-init opens to the store (strace counts its connect calls): one per
    store is the goal, every path read over it (keep-alive), so one TLS handshake."""
    out_file = tempfile.mktemp(prefix="rotor-init-strace.")
    run = subprocess.run(["strace", "-f", "-e", "trace=connect", "-o", out_file, binary, "--", "true"],
                         env=env, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"rotor-init under strace failed: {run.stderr[-2000:]}")
    with open(out_file) as f:
        count = sum(1 for line in f if "connect(" in line and f"htons({port})" in line)
    os.unlink(out_file)
    return count

def main():
    env = dict(os.environ, RUSTFLAGS="-C target-feature=+crt-static")
    subprocess.run(["cargo", "build", "--locked", "-q", "-p", "rotor-init", "--profile", "release-init",
                    "--target", "x86_64-unknown-linux-gnu"], cwd=ROOT, env=env, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "x86_64-unknown-linux-gnu/release-init/rotor-init")
    size = os.path.getsize(binary)
    stores = []
    try:
        stores.append(start_bao(tls=False))
        stores.append(start_bao(tls=True))
        for _, addr, ca in stores:
            for p in range(50):
                api(addr, ca, "POST", f"secret/data/bench/p{p}", {"data": {f"k{k}": f"value-{p}-{k}" for k in range(2)}})
        rows = []
        for (_, addr, ca), scheme in zip(stores, ["http", "https"]):
            for refs, paths in [(1, 1), (10, 5), (100, 50)]:
                rows.append((scheme, refs, paths) + timed_runs(binary, reference_env(addr, ca, refs, paths)))
        plain_port = int(stores[0][1].rsplit(":", 1)[1])
        proxy = CountingProxy(plain_port)
        proxied = reference_env(f"http://127.0.0.1:{proxy.server_address[1]}", None, 10, 5)
        out = subprocess.run([binary, "--", "true"], env=proxied, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"rotor-init through the proxy failed: {out.stderr}")
        requests = proxy.count
        proxy.shutdown()
        instructions = {scheme: instructions_to_execve(binary, reference_env(addr, ca, 10, 5))
                        for (_, addr, ca), scheme in zip(stores, ["http", "https"])}
        connections = {scheme: connections_to(binary, reference_env(addr, ca, 10, 5), int(addr.rsplit(":", 1)[1]))
                       for (_, addr, ca), scheme in zip(stores, ["http", "https"])}
        print(f"command: python3 scripts/bench_init.py {RUNS}  date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
              f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
        print(f"binary: {binary} {size} bytes ({size / 1048576:.2f} MiB), static, stripped\n")
        print("| store | references | paths | median ms (start to exit of `true`) | p90 ms | peak RSS MiB |")
        print("| --- | --- | --- | --- | --- | --- |")
        for scheme, refs, paths, med, p90, mib in rows:
            print(f"| {scheme} | {refs} | {paths} | {med:.1f} | {p90:.1f} | {mib:.1f} |")
        print(f"\n10 references over 5 paths: {requests} store requests (counted by a proxy, token auth, no login request)")
        for scheme, n in instructions.items():
            print(f"10 references over 5 paths, {scheme}: {n:,} instructions to execve (callgrind), "
                  f"{connections[scheme]} TCP connection(s) to the store (strace)")
    finally:
        for bao, _, _ in stores:
            bao.terminate(); bao.wait(timeout=10)

main()
