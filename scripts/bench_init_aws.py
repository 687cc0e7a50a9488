#!/usr/bin/env python3
"""Benchmark: rotor-init from start to execve against AWS as moto serves it (Secrets Manager, SSM,
STS), the AWS half of scripts/bench_init.py.

Builds the static release binary the way CI and Dockerfile.init do, starts moto_server on a free
loopback port, writes 3 Secrets Manager secrets and 2 SSM parameters (JSON values), and runs
`rotor-init -- true` with 10 references over those 5 secrets (web identity: a token file and a
role, exchanged at moto's STS) RUNS times. Counts the AWS requests (moto's access log), the
instructions to execve (callgrind, with a command that does not exist) and the TCP connections
(strace). Prints Markdown for BENCHMARKS.md.
Usage: python3 scripts/bench_init_aws.py [RUNS]
"""
import json, os, platform, socket, statistics, subprocess, sys, tempfile, time, urllib.request

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGION = "eu-west-1"

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def call(addr, service, target, body):
    """One AWS JSON API call; moto reads the region from the credential scope and checks nothing else."""
    req = urllib.request.Request(addr + "/", data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target,
        "Authorization": f"AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")

def main():
    env = dict(os.environ, RUSTFLAGS="-C target-feature=+crt-static")
    subprocess.run(["cargo", "build", "--locked", "-q", "-p", "rotor-init", "--profile", "release-init",
                    "--target", "x86_64-unknown-linux-gnu"], cwd=ROOT, env=env, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "x86_64-unknown-linux-gnu/release-init/rotor-init")
    size = os.path.getsize(binary)
    home, port = tempfile.mkdtemp(), free_port()
    log = open(os.path.join(home, "moto.log"), "w")
    moto = subprocess.Popen([os.path.join(ROOT, ".tools/bin/moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            env=dict(os.environ, HOME=home), stdout=log, stderr=log)
    addr = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(addr + "/moto-api/", timeout=1); break
            except Exception:
                time.sleep(0.1)
        else:
            sys.exit("moto did not start")
        arns = []
        for i in range(3):
            arns.append(call(addr, "secretsmanager", "secretsmanager.CreateSecret",
                             {"Name": f"bench/s{i}", "SecretString": json.dumps({"k0": f"v{i}0", "k1": f"v{i}1"})})["ARN"])
        for i in range(2):
            call(addr, "ssm", "AmazonSSM.PutParameter", {"Name": f"/bench/p{i}", "Type": "SecureString",
                 "Value": json.dumps({"k0": f"p{i}0", "k1": f"p{i}1"})})
            arns.append(f"arn:aws:ssm:{REGION}:123456789012:parameter/bench/p{i}")
        token = os.path.join(home, "token")
        with open(token, "w") as f:
            f.write("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib2VuY2gifQ.c2ln")
        run_env = {"PATH": "/usr/bin:/bin", "ROTOR_ADDR": "http://127.0.0.1:1", "ROTOR_ROLE": "app",
                   "ROTOR_LOG_LEVEL": "warn", "AWS_ENDPOINT_URL": addr,
                   "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/app", "AWS_WEB_IDENTITY_TOKEN_FILE": token}
        for i in range(10):
            run_env[f"SECRET_{i}"] = f"{arns[i % 5]}#k{(i // 5) % 2}"
        def api_requests():
            with open(os.path.join(home, "moto.log")) as f:
                return sum(1 for line in f if '"POST / HTTP' in line)
        before = api_requests()
        out = subprocess.run([binary, "--", "true"], env=run_env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"rotor-init failed: {out.stderr}")
        time.sleep(0.5)  # moto writes its access log line after answering
        requests = api_requests() - before
        times, rss = [], []
        for _ in range(RUNS):
            start = time.perf_counter()
            out = subprocess.run(["/usr/bin/time", "-f", "%M", binary, "--", "true"], env=run_env, capture_output=True, text=True)
            times.append((time.perf_counter() - start) * 1000)
            if out.returncode != 0:
                sys.exit(f"rotor-init failed: {out.stderr}")
            rss.append(int(out.stderr.strip().splitlines()[-1]))
        times.sort()
        cg = tempfile.mktemp(prefix="rotor-init-callgrind.")
        run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}", binary, "--", "/nonexistent/app"],
                             env=run_env, capture_output=True, text=True)
        if run.returncode != 127:
            sys.exit(f"expected exit 127 at the failed execve, got {run.returncode}: {run.stderr[-2000:]}")
        with open(cg) as f:
            instructions = next(int(line.split()[1]) for line in f if line.startswith("totals:"))
        os.unlink(cg)
        st = tempfile.mktemp(prefix="rotor-init-strace.")
        subprocess.run(["strace", "-f", "-e", "trace=connect", "-o", st, binary, "--", "true"], env=run_env, capture_output=True, check=True)
        with open(st) as f:
            connections = sum(1 for line in f if "connect(" in line and f"htons({port})" in line)
        os.unlink(st)
        print(f"command: python3 scripts/bench_init_aws.py {RUNS}  date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
              f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
        print(f"binary: {binary} {size} bytes ({size / 1048576:.2f} MiB), static, stripped\n")
        print("| figure | 10 references over 3 secrets + 2 parameters (moto, http) |")
        print("| --- | --- |")
        print(f"| start to exit of `true`, median / p90 ({RUNS} runs) | {statistics.median(times):.1f} / {times[int(len(times) * 0.9) - 1]:.1f} ms |")
        print(f"| peak RSS | {max(rss) / 1024:.1f} MiB |")
        print(f"| AWS requests (moto's access log) | {requests} (1 STS AssumeRoleWithWebIdentity + 5 reads) |")
        print(f"| instructions to execve (callgrind) | {instructions:,} |")
        print(f"| TCP connections to the endpoint (strace) | {connections} |")
    finally:
        moto.terminate(); moto.wait(timeout=10)

main()
