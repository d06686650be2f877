#!/usr/bin/env python3
"""Tests of the container image and of the dev manifests under podman (make check-image).

    tests/image/check-image.sh            (builds nothing: run `make image` first; make check-image does both)
    python3 tests/image/run.py --engine podman --image chunkd:0.1.0 [-k SUBSTRING] [--keep]

Each test starts its own redis-server on a free loopback port (tests/integration/harness.py) and runs the image
with the host's network, so the containers reach it on 127.0.0.1 and their HTTP port is a free one too:

- image.pipeline: enqueue, a worker and collect, all from the image; every id comes back exactly once; the
  worker is PID 1 of its container, is chunkd itself (no shell), and runs as UID 10001, not root.
- image.sigterm_drains / image.sigint_drains: the signal to the container while items are in flight: /readyz
  turns 503, the worker exits 0, its processing list is empty and every item is either done or back in pending.
- kube.dev_overlay_plays: `podman kube play` of deploy/overlays/dev, rendered by kubectl kustomize with the
  local image; the only changes (made by a kustomization in build/, never to deploy/) point REDIS_URL at the
  test's redis-server, use the host network and a free port, and leave out what podman cannot run offline
  (the Redis StatefulSet, whose image is on Docker Hub, the Services, and the NetworkPolicy). The worker pod
  answers /readyz 200 and works a small queue through.
- kube.batch_jobs_play: deploy/batch's two Jobs, rendered the same way (podman 4.3 plays no Job, so each Job's
  pod template is played as a Pod): the work pod starts first and waits for the queue's input, the enqueue pod
  pushes and seals it, and the work pod exits 0 with every item done.
- compose.stack: docker/compose.yaml run with `podman run` commands generated from it (no podman-compose: it needs
  a bridge network, which podman cannot make here), on the host network, with the test's redis-server and the
  Debian prometheus binary in place of the Docker Hub images: enqueue, the workers, the collector's results files
  (every id once), Prometheus scraping every worker with chunkd's rules loaded.

Prints `PASS name (1.2s)`, `FAIL name: reason` or `SKIP name: reason` and ends with
`check-image: N passed, N failed, N skipped`; fails when anything failed or nothing passed, and a -k that selects
nothing is an error (exit 2). The kube test names its directory, pod and podman secret after the run, so
concurrent runs do not collide.
Python 3.11 standard library only.
"""

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.dont_write_bytecode = True
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from harness import RedisServer, TestFailure, assert_exactly_once, check, free_port, one_line, wait_until  # noqa: E402

ENGINE = "podman"
IMAGE = "chunkd:latest"
CLEANUP = []  # callables, run after each test


def engine(*args, input_text=None, timeout=120, check_rc=True):
    """Run the container engine; returns CompletedProcess (text)."""
    r = subprocess.run([ENGINE, *args], input=input_text, capture_output=True, text=True, timeout=timeout,
                       stdin=None if input_text is not None else subprocess.DEVNULL)
    if check_rc and r.returncode != 0:
        raise TestFailure(f"{ENGINE} {' '.join(args[:3])}... exited {r.returncode}: {one_line(r.stderr, 600)}")
    return r


def http_status(port, path, timeout=2):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def container_logs(name):
    r = engine("logs", name, check_rc=False, timeout=30)
    return one_line(r.stdout + r.stderr, 800)


def start_worker(name, redis, queue, port, *extra):
    engine("run", "-d", "--name", name, "--network", "host", "--read-only", "--cap-drop", "ALL",
           "--security-opt", "no-new-privileges", "-e", f"REDIS_URL={redis.url()}", IMAGE,
           "worker", "--queue", queue, "--http-port", str(port), "--http-addr", "127.0.0.1", *extra)
    CLEANUP.append(lambda: engine("rm", "-f", "-t", "0", name, check_rc=False))
    wait_until(lambda: http_status(port, "/readyz") == 200, 30,
               lambda: f"/readyz 200 from {name} (logs: {container_logs(name)})")


def enqueue(redis, queue, items, chunk_size):
    text = "".join(json.dumps(i) + "\n" for i in items)
    engine("run", "--rm", "-i", "--network", "host", "-e", f"REDIS_URL={redis.url()}", IMAGE,
           "enqueue", "--queue", queue, "--chunk-size", str(chunk_size), "--rejects", "/tmp/rejected.jsonl", "-",
           input_text=text)


def collect(redis, queue, timeout=180):
    r = engine("run", "--rm", "--network", "host", "-e", f"REDIS_URL={redis.url()}", IMAGE,
               "collect", "--queue", queue, "--until-done", timeout=timeout)
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def wait_exit(name, timeout):
    """The container's exit code once it has stopped (podman/docker wait)."""
    r = engine("wait", name, timeout=timeout)
    return int(r.stdout.strip().splitlines()[-1])


def key(queue, suffix):
    return f"chunkd:{{{queue}}}:{suffix}"


def pending_items(c, queue):
    return sum(len(json.loads(x)["items"]) for x in c.execute("LRANGE", key(queue, "pending"), 0, -1))


def processing_len(c, queue):
    keys = c.execute("KEYS", key(queue, "processing:*"))
    return sum(c.execute("LLEN", k) for k in keys)


def stat(c, queue, name):
    v = c.execute("HGET", key(queue, "stats"), name)
    return int(v) if v is not None else 0


# ---------------------------------------------------------------------------------------------------------------

def test_image_pipeline(redis, tmp):
    queue, name, port = f"img-{uuid.uuid4().hex[:8]}", f"chunkd-test-{uuid.uuid4().hex[:8]}", free_port()
    items = [{"id": i, "sleep_ms": 20} for i in range(1, 2001)]
    enqueue(redis, queue, items, 50)
    start_worker(name, redis, queue, port, "--handler", "sleep", "--concurrency", "500")

    # chunkd is PID 1 of the container, not a shell, and runs as UID/GID 10001.
    pid = int(engine("inspect", "-f", "{{.State.Pid}}", name).stdout.strip())
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    check(comm == "chunkd", f"the container's PID 1 is {comm!r}, not chunkd")
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    uids, gids = status["Uid"].split(), status["Gid"].split()
    check(set(uids) == {"10001"} and set(gids) == {"10001"}, f"chunkd runs as Uid {uids} Gid {gids}, not 10001")
    nspid = status.get("NSpid", "").split()
    check(nspid[-1:] == ["1"], f"chunkd is not PID 1 in its namespace (NSpid {nspid})")
    check(http_status(port, "/healthz") == 200, "/healthz is not 200")

    results = collect(redis, queue)
    assert_exactly_once(results, [i["id"] for i in items])
    check(all(r.get("ok") for r in results), "some results are not ok")

    engine("kill", "--signal", "TERM", name)
    rc = wait_exit(name, 60)
    check(rc == 0, f"idle worker exited {rc} after SIGTERM (logs: {container_logs(name)})")


def _drains(redis, tmp, signame):
    queue, name, port = f"img-{uuid.uuid4().hex[:8]}", f"chunkd-test-{uuid.uuid4().hex[:8]}", free_port()
    items = [{"id": i, "sleep_ms": 2000} for i in range(1, 401)]
    enqueue(redis, queue, items, 20)
    start_worker(name, redis, queue, port, "--handler", "sleep", "--concurrency", "100",
                 "--drain-timeout-ms", "20000")
    c = redis.client()
    wait_until(lambda: processing_len(c, queue) > 0, 30, "chunks in the worker's processing list")

    t0 = time.monotonic()
    engine("kill", "--signal", signame, name)
    wait_until(lambda: http_status(port, "/readyz") in (503, None), 5, "/readyz 503 once draining")
    rc = wait_exit(name, 60)
    took = time.monotonic() - t0
    check(rc == 0, f"worker exited {rc} after SIG{signame} (logs: {container_logs(name)})")
    held = processing_len(c, queue)
    check(held == 0, f"{held} chunks left in processing lists after the drain")
    done, back = stat(c, queue, "done") + stat(c, queue, "failed"), pending_items(c, queue)
    check(done > 0, "the drain finished no in-flight item")
    check(done + back == len(items), f"{done} done + {back} back in pending != {len(items)} enqueued")
    check(took < 30, f"the drain took {took:.1f}s")


def test_image_sigterm_drains(redis, tmp):
    _drains(redis, tmp, "TERM")


def test_image_sigint_drains(redis, tmp):
    _drains(redis, tmp, "INT")


def kustomization_head(work, target, run, version, config_map, literals):
    """The start of a kustomization in work/ of target (a directory under the repository) for `podman kube play`:
    every name suffixed with -run, the local image, the ConfigMap config_map merged with literals."""
    lines = "".join(f"      - {x}\n" for x in literals)
    return f"""\
# Generated by tests/image/run.py: {target} for `podman kube play` against the test's redis-server.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {os.path.relpath(ROOT / target, work)}
nameSuffix: "-{run}"
images:
  - name: chunkd
    newName: localhost/chunkd
    newTag: "{version}"
configMapGenerator:
  - name: {config_map}
    behavior: merge
    literals:
{lines}"""


def render_kube_kustomization(work, run, queue, port, secret_name, version):
    """Writes work/kustomization.yaml: deploy/overlays/dev for `podman kube play` against the test's redis-server,
    every name suffixed with -run, REDIS_URL from the Secret secret_name."""
    (work / "kustomization.yaml").write_text(kustomization_head(
        work, "deploy/overlays/dev", run, version, "chunkd-config",
        [f"CHUNKD_QUEUE={queue}", f"CHUNKD_HTTP_PORT={port}", "CHUNKD_HTTP_ADDR=127.0.0.1"]) + f"""\
patches:
  - target: {{kind: Deployment, name: chunkd-worker}}
    patch: |-
      - op: add
        path: /spec/template/spec/hostNetwork
        value: true
      # podman refuses port mappings on the host network
      - op: remove
        path: /spec/template/spec/containers/0/ports
      - op: replace
        path: /spec/template/spec/containers/0/livenessProbe/httpGet/port
        value: {port}
      - op: replace
        path: /spec/template/spec/containers/0/readinessProbe/httpGet/port
        value: {port}
      - op: test
        path: /spec/template/spec/containers/0/env/0/name
        value: REDIS_URL
      - op: replace
        path: /spec/template/spec/containers/0/env/0/valueFrom/secretKeyRef/name
        value: {secret_name}
  - target: {{kind: StatefulSet}}
    patch: |-
      $patch: delete
      apiVersion: apps/v1
      kind: StatefulSet
      metadata: {{name: x}}
  - target: {{kind: Service}}
    patch: |-
      $patch: delete
      apiVersion: v1
      kind: Service
      metadata: {{name: x}}
  - target: {{kind: PodDisruptionBudget}}
    patch: |-
      $patch: delete
      apiVersion: policy/v1
      kind: PodDisruptionBudget
      metadata: {{name: x}}
  - target: {{kind: Secret}}
    patch: |-
      $patch: delete
      apiVersion: v1
      kind: Secret
      metadata: {{name: x}}
  - target: {{kind: Namespace}}
    patch: |-
      $patch: delete
      apiVersion: v1
      kind: Namespace
      metadata: {{name: x}}
  - target: {{kind: NetworkPolicy}}
    patch: |-
      $patch: delete
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata: {{name: x}}
""")


def test_kube_dev_overlay_plays(redis, tmp):
    # Everything this test makes is named after the run, so concurrent runs (CI jobs, developers on one host) do
    # not share a directory, a pod or podman's host-wide secret: the kustomization's directory, the suffix of
    # the Deployment and ConfigMap names (hence the pod's), and the Secret.
    run = uuid.uuid4().hex[:8]
    queue, port, secret_name = f"kube-{run}", free_port(), f"chunkd-redis-{run}"
    version = IMAGE.rsplit(":", 1)[1]
    work = ROOT / "build" / f"kubeplay-{run}"
    work.mkdir(parents=True)
    CLEANUP.append(lambda: shutil.rmtree(work, ignore_errors=True))
    render_kube_kustomization(work, run, queue, port, secret_name, version)
    r = subprocess.run(["kubectl", "kustomize", str(work)], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, f"kubectl kustomize: {one_line(r.stderr)}")
    manifest = tmp / "dev.yaml"
    manifest.write_text(r.stdout)
    kinds = [line.split(":", 1)[1].strip() for line in r.stdout.splitlines() if line.startswith("kind:")]
    check(sorted(kinds) == ["ConfigMap", "Deployment"], f"rendered kinds {kinds}")
    for name in (f"name: chunkd-worker-{run}\n", f"name: chunkd-config-{run}-", f"name: {secret_name}\n"):
        check(name in r.stdout, f"the rendered manifest has no {name.strip()!r}: not named after the run")

    # podman 4.3 stores a Secret of the YAML as YAML but reads secretKeyRef back as a JSON map of base64 values
    # ("secret chunkd-redis is not valid JSON"), so the dev overlay's Secret is left out above and made here in
    # that form, with the test's address.
    secret = {"url": base64.b64encode(redis.url().encode()).decode()}
    engine("secret", "create", secret_name, "-", input_text=json.dumps(secret))
    CLEANUP.append(lambda: engine("secret", "rm", secret_name, check_rc=False))

    items = [{"id": f"k{i}", "sleep_ms": 10} for i in range(1, 301)]
    enqueue(redis, queue, items, 25)
    CLEANUP.append(lambda: engine("kube", "down", str(manifest), check_rc=False, timeout=120))
    engine("kube", "play", "--replace", str(manifest), timeout=180)
    wait_until(lambda: http_status(port, "/readyz") == 200, 60,
               lambda: f"/readyz 200 from the kube play pod ({one_line(engine('pod', 'ps', check_rc=False).stdout)})")
    results = collect(redis, queue)
    assert_exactly_once(results, [i["id"] for i in items])
    engine("kube", "down", str(manifest), timeout=120)
    wait_until(lambda: http_status(port, "/readyz") is None, 60, "the pod gone after kube down")
    c = redis.client()
    check(processing_len(c, queue) == 0, "chunks left in processing lists after kube down")


def render_batch_kustomization(work, part, run, queue, secret_name, version):
    """Writes work/kustomization.yaml: deploy/batch/<part> against the test's redis-server, names suffixed with
    -run, the host network, REDIS_URL from the Secret secret_name."""
    container = "enqueue" if part == "enqueue" else "chunkd"
    (work / "kustomization.yaml").write_text(kustomization_head(
        work, f"deploy/batch/{part}", run, version, "chunkd-batch-config",
        [f"CHUNKD_QUEUE={queue}", "CHUNKD_HTTP_PORT=0", "CHUNKD_CONCURRENCY=200"]) + f"""\
patches:
  - target: {{kind: Job}}
    patch: |-
      - op: add
        path: /spec/template/spec/hostNetwork
        value: true
      - op: test
        path: /spec/template/spec/containers/0/name
        value: {container}
      - op: replace
        path: /spec/template/spec/containers/0/env/0/valueFrom/secretKeyRef/name
        value: {secret_name}
""" + ("""\
      - op: remove
        path: /spec/template/spec/containers/0/ports
      - op: remove
        path: /spec/template/spec/containers/0/livenessProbe
""" if part == "work" else ""))


def job_as_pods(manifest_text, run):
    """podman 4.3's kube play runs Pods and Deployments but not Jobs: each Job becomes its pod template as a Pod
    (restartPolicy Never, as the Job's), named after the Job; the other objects (ConfigMaps) stay. Returns YAML."""
    import yaml  # python3-yaml, a Debian package (kube play's input is YAML; kubectl renders only YAML offline)
    out = []
    for doc in yaml.safe_load_all(manifest_text):
        if not doc:
            continue
        if doc["kind"] == "Job":
            tmpl = doc["spec"]["template"]
            doc = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": doc["metadata"]["name"], "labels": tmpl["metadata"].get("labels", {})},
                   "spec": tmpl["spec"]}
        out.append(doc)
    return yaml.safe_dump_all(out, sort_keys=False)


def test_kube_batch_jobs_play(redis, tmp):
    """deploy/batch as Kubernetes would run it, under podman: the work Job's pod starts FIRST and waits for the
    queue's input (the old --exit-when-empty exited at once), then the enqueue Job's pod pushes and seals the
    queue, and the worker exits 0 once every item is done."""
    run = uuid.uuid4().hex[:8]
    queue, secret_name = f"batch-{run}", f"chunkd-redis-{run}"
    version = IMAGE.rsplit(":", 1)[1]
    secret = {"url": base64.b64encode(redis.url().encode()).decode()}
    engine("secret", "create", secret_name, "-", input_text=json.dumps(secret))
    CLEANUP.append(lambda: engine("secret", "rm", secret_name, check_rc=False))
    manifests = {}
    for part in ("work", "enqueue"):
        work = ROOT / "build" / f"kubebatch-{part}-{run}"
        work.mkdir(parents=True)
        CLEANUP.append(lambda work=work: shutil.rmtree(work, ignore_errors=True))
        render_batch_kustomization(work, part, run, queue, secret_name, version)
        r = subprocess.run(["kubectl", "kustomize", str(work)], capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, f"kubectl kustomize {part}: {one_line(r.stderr)}")
        check("podFailurePolicy" in r.stdout and "activeDeadlineSeconds" in r.stdout,
              f"the {part} Job has no podFailurePolicy or activeDeadlineSeconds")
        manifests[part] = tmp / f"batch-{part}.yaml"
        manifests[part].write_text(job_as_pods(r.stdout, run))
        CLEANUP.append(lambda m=manifests[part]: engine("kube", "down", str(m), check_rc=False, timeout=120))

    c = redis.client()
    engine("kube", "play", "--replace", str(manifests["work"]), timeout=180)
    worker = f"chunkd-batch-work-{run}-chunkd"  # podman names a pod's container <pod>-<container>
    wait_until(lambda: "not sealed" in engine("logs", worker, check_rc=False).stderr
               or engine("inspect", "-f", "{{.State.Running}}", worker, check_rc=False).stdout.strip() != "true",
               60, lambda: f"the work pod waiting for the queue (logs: {container_logs(worker)})")
    running = engine("inspect", "-f", "{{.State.Running}}", worker).stdout.strip()
    check(running == "true", f"the work pod did not wait for the enqueue (logs: {container_logs(worker)})")

    engine("kube", "play", "--replace", str(manifests["enqueue"]), timeout=180)
    enq = f"chunkd-batch-enqueue-{run}-enqueue"
    rc = wait_exit(enq, 120)
    check(rc == 0, f"the enqueue pod exited {rc} (logs: {container_logs(enq)})")
    n = len((ROOT / "deploy" / "batch" / "enqueue" / "items.jsonl").read_text().splitlines())
    check(c.execute("EXISTS", key(queue, "sealed")) == 1, "the enqueue Job did not seal the queue")
    rc = wait_exit(worker, 120)
    check(rc == 0, f"the work pod exited {rc} (logs: {container_logs(worker)})")
    check(stat(c, queue, "done") == n, f"{stat(c, queue, 'done')} items done, {n} in items.jsonl")
    check(processing_len(c, queue) == 0, "chunks left in processing lists")


def compose_run_args(name, svc, redis_url, queue, extra_env=()):
    """`podman run` arguments for a chunkd service of docker/compose.yaml, as compose would run it but on the host
    network (podman here has no bridge network: netavark is missing): its environment with REDIS_URL and
    CHUNKD_QUEUE pointed at the test's, read_only, cap_drop, security_opt and tmpfs as written."""
    env = {**svc.get("environment", {}), "REDIS_URL": redis_url, "CHUNKD_QUEUE": queue, **dict(extra_env)}
    args = ["--name", name, "--network", "host"]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    if svc.get("read_only"):
        args.append("--read-only")
    for cap in svc.get("cap_drop", []):
        args += ["--cap-drop", cap]
    for opt in svc.get("security_opt", []):
        args += ["--security-opt", opt]
    for path in svc.get("tmpfs", []):
        args += ["--tmpfs", path]
    return args


def test_compose_stack(redis, tmp):
    """docker/compose.yaml's stack, run with plain `podman run` commands generated from it (podman-compose needs a
    bridge network, which podman cannot make here): its workers and collector from the chunkd image with their
    commands and hardening as written, the enqueue tool fed a file on stdin, and Prometheus (the Debian binary, with
    docker/prometheus.yml and deploy/prometheus/rules.yaml) scraping the workers. Redis is the test's redis-server
    (the compose file's image is on Docker Hub). Every id comes back once in the collector's results files, and
    Prometheus sees every worker up with chunkd's metrics."""
    import yaml  # python3-yaml (Debian)
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    run = uuid.uuid4().hex[:8]
    queue = f"compose-{run}"
    workers = sorted(n for n, svc in services.items() if svc.get("command", [None])[0] == "worker")
    check(len(workers) >= 2, f"compose.yaml has workers {workers}")
    ports = {w: free_port() for w in workers}
    for w in workers:
        name = f"chunkd-{w}-{run}"
        extra = {"CHUNKD_HTTP_PORT": ports[w], "CHUNKD_HTTP_ADDR": "127.0.0.1"}  # one host network: a port each
        engine("run", "-d", *compose_run_args(name, services[w], redis.url(), queue, extra.items()), IMAGE,
               *services[w]["command"])
        CLEANUP.append(lambda name=name: engine("rm", "-f", "-t", "0", name, check_rc=False))
    results_dir = tmp / "results"
    results_dir.mkdir()
    results_dir.chmod(0o777)  # the collector runs as 10001
    col = services["collector"]
    col_name = f"chunkd-collector-{run}"
    mount = col["volumes"][0].split(":")[1]  # results:/data
    engine("run", "-d", *compose_run_args(col_name, col, redis.url(), queue), "-v", f"{results_dir}:{mount}:Z",
           IMAGE, *col["command"])
    CLEANUP.append(lambda: engine("rm", "-f", "-t", "0", col_name, check_rc=False))

    prom_port, prom_dir = free_port(), tmp / "prometheus"
    prom_dir.mkdir()
    prom_cfg = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    prom_cfg["rule_files"] = [str(ROOT / "deploy" / "prometheus" / "rules.yaml")]
    prom_cfg["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{ports[w]}" for w in workers]
    prom_cfg["global"]["scrape_interval"] = "1s"
    (prom_dir / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg))
    with open(prom_dir / "log", "wb") as log:
        prom = subprocess.Popen(["prometheus", f"--config.file={prom_dir / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={prom_dir / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    CLEANUP.append(lambda: (prom.terminate(), prom.wait(30)))

    items = [{"id": i, "sleep_ms": 20} for i in range(1, 1001)]
    enq = services["enqueue"]
    engine("run", "--rm", "-i", *compose_run_args(f"chunkd-enqueue-{run}", enq, redis.url(), queue), IMAGE,
           *enq["command"], input_text="".join(json.dumps(i) + "\n" for i in items))

    def lines():
        return [json.loads(x) for f in sorted(results_dir.glob("*.jsonl")) for x in f.read_text().splitlines()
                if x.strip()]
    wait_until(lambda: len(lines()) >= len(items), 90,
               lambda: f"{len(items)} result lines in {results_dir} ({len(lines())}; logs: {container_logs(col_name)})")
    assert_exactly_once(lines(), [i["id"] for i in items])

    def prom_query(q):
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?query={urllib.request.quote(q)}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return json.load(resp)["data"]["result"]
        except (OSError, ValueError, KeyError):
            return []
    want = len(workers)
    wait_until(lambda: len([r for r in prom_query('up{job="chunkd"}') if r["value"][1] == "1"]) == want, 60,
               lambda: f"Prometheus scraping {want} workers up ({prom_query('up')}; "
                       f"log: {one_line((prom_dir / 'log').read_text()[-600:])})")
    wait_until(lambda: prom_query("sum(chunkd_chunks_committed_total)"), 30, "chunkd's metrics in Prometheus")
    committed = float(prom_query("sum(chunkd_chunks_committed_total)")[0]["value"][1])
    check(committed > 0, f"Prometheus sees {committed} chunks committed")
    rules = urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/rules", timeout=5).read()
    check(b'"groups":[{' in rules, "Prometheus loaded no rule group from deploy/prometheus/rules.yaml")


TESTS = [
    ("image.pipeline", test_image_pipeline),
    ("image.sigterm_drains", test_image_sigterm_drains),
    ("image.sigint_drains", test_image_sigint_drains),
    ("kube.dev_overlay_plays", test_kube_dev_overlay_plays),
    ("kube.batch_jobs_play", test_kube_batch_jobs_play),
    ("compose.stack", test_compose_stack),
]


def main():
    global ENGINE, IMAGE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="podman")
    ap.add_argument("--image", required=True)
    ap.add_argument("-k", default="")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = ap.parse_args()
    ENGINE, IMAGE = a.engine, a.image
    passed = failed = skipped = 0
    selected = [(name, fn) for name, fn in TESTS if a.k in name]
    if not selected:
        print(f"run.py: no test matches -k {a.k!r}: nothing selected is a failure, not a pass", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="chunkd-image-"))
    for name, fn in selected:
        if ENGINE != "podman" and name.startswith("kube."):
            skipped += 1
            print(f"SKIP {name}: needs podman kube play", flush=True)
            continue
        tmp = base / name
        tmp.mkdir()
        redis = RedisServer(tmp / "redis").start()
        t0 = time.monotonic()
        try:
            fn(redis, tmp)
            passed += 1
            print(f"PASS {name} ({time.monotonic() - t0:.1f}s)", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure as a FAIL line
            failed += 1
            print(f"FAIL {name}: {one_line(f'{type(e).__name__}: {e}', 1200)}", flush=True)
        finally:
            while CLEANUP:
                try:
                    CLEANUP.pop()()
                except Exception as e:  # noqa: BLE001
                    print(f"cleanup: {e}", file=sys.stderr)
            redis.stop()
    if not a.keep:
        subprocess.run(["rm", "-rf", str(base)])
    print(f"check-image: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
