#!/usr/bin/env node
// Offline checks of deploy/ (make check-deploy). From the repository root:
//
//   node tests/deploy/check.mjs [--version X] [--write-prometheusrule]
//
// 1. Renders every kustomization with `kubectl kustomize`: the base, each overlay, the batch Jobs, and the base
//    with each component on its own (components are rendered through a throwaway kustomization in build/).
// 2. Validates every rendered object against its schema: kubernetes-models' validate() for the core API, and the
//    CRD models of @kubernetes-models/keda and @kubernetes-models/prometheus-operator for KEDA and the Prometheus
//    Operator. An object of a kind without a model fails.
// 3. Strict: no unknown fields. validate() lets them pass (the schemas allow additional properties), so every
//    object is also written as a typed TypeScript constant and `tsc` checks it: an object literal with a property
//    its interface lacks is an error (excess-property check), at any depth.
// 4. chunkd's own rules: the worker's probes, securityContext, resources, terminationGracePeriodSeconds above the
//    drain timeout, REDIS_URL from a Secret, MALLOC_ARENA_MAX, the image tag, config references that resolve,
//    KEDA triggers that name the configured queue, the workers' NetworkPolicy, the dev Redis's password.
// 5. deploy/prometheus/prometheusrule.yaml holds exactly the groups of deploy/prometheus/rules.yaml
//    (--write-prometheusrule regenerates it).
//
// Prints one line per finding and ends with `check-deploy: N passed, N failed`; exit 0 only when nothing failed.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import YAML from "yaml";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "../..");
const WORK = join(ROOT, "build", "deploy-check");
const args = process.argv.slice(2);
const opt = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const VERSION = opt("--version") ?? execFileSync("make", ["-s", "--no-print-directory", "version"], { cwd: ROOT, encoding: "utf8" }).trim();

rmSync(WORK, { recursive: true, force: true });

let passed = 0;
let failed = 0;
const pass = (what) => { passed++; console.log(`PASS ${what}`); };
const fail = (what, why) => { failed++; console.log(`FAIL ${what}: ${why}`); };

// KEDA trigger metadata keys, per trigger type, as KEDA's scaler documentation lists them (keda.sh/docs/2.16:
// scalers/redis and scalers/prometheus; keyName, keyValue and activationValue are 2.16's). The CRD types metadata
// as a free map of strings, so a misspelt key (`listlength`, `activationListLenght`) passes every schema and KEDA
// falls back to the default. Authentication parameters (password, username, tls, ca, ...) belong in the
// TriggerAuthentication, not here.
const KEDA_TRIGGER_KEYS = {
    redis: ["address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv", "usernameFromEnv",
        "passwordFromEnv", "listName", "listLength", "activationListLength", "keyName", "keyValue", "activationValue",
        "enableTLS", "unsafeSsl", "databaseIndex"],
    prometheus: ["serverAddress", "query", "queryParameters", "threshold", "activationThreshold", "namespace",
        "customHeaders", "ignoreNullValues", "unsafeSsl", "timeout", "authModes", "awsRegion", "identityOwner"],
};

// ---------------------------------------------------------------------------------------------------------------
// 5. The PrometheusRule generated from rules.yaml.
const RULES = join(ROOT, "deploy/prometheus/rules.yaml");
const PROMRULE = join(ROOT, "deploy/prometheus/prometheusrule.yaml");
function prometheusRuleText() {
    const groups = YAML.parse(readFileSync(RULES, "utf8")).groups;
    const obj = {
        apiVersion: "monitoring.coreos.com/v1",
        kind: "PrometheusRule",
        metadata: { name: "chunkd", labels: { "app.kubernetes.io/name": "chunkd", "app.kubernetes.io/part-of": "chunkd" } },
        spec: { groups },
    };
    return "# GENERATED from rules.yaml by `node tests/deploy/check.mjs --write-prometheusrule` (make deploy-sync):\n" +
        "# edit rules.yaml, not this file. `make check-deploy` fails when the two differ.\n" +
        YAML.stringify(obj, { lineWidth: 96, minContentWidth: 40 });
}
if (args.includes("--write-prometheusrule")) {
    writeFileSync(PROMRULE, prometheusRuleText());
    console.log(`wrote ${relative(ROOT, PROMRULE)}`);
    process.exit(0);
}
{
    const want = YAML.parse(readFileSync(RULES, "utf8")).groups;
    let have;
    try { have = YAML.parse(readFileSync(PROMRULE, "utf8"))?.spec?.groups; } catch (e) { have = e; }
    if (isDeepStrictEqual(want, have)) pass("prometheusrule.yaml has the groups of rules.yaml");
    else fail("prometheusrule.yaml", "differs from rules.yaml: run `make deploy-sync`");
}

// Every alert waits (`for:`) before it fires and names its runbook (deploy/runbooks/<alert>.md, a file that exists).
{
    const alerts = YAML.parse(readFileSync(RULES, "utf8")).groups.flatMap((g) => g.rules).filter((r) => r.alert);
    let bad = 0;
    for (const a of alerts) {
        const problems = [];
        if (!a.for) problems.push("no for:");
        const rb = a.annotations?.runbook_url;
        if (!rb) problems.push("no runbook_url annotation");
        else if (!/^deploy\/runbooks\/[\w-]+\.md$/.test(rb) || !existsSync(join(ROOT, rb)))
            problems.push(`runbook_url ${rb} is not a file under deploy/runbooks/`);
        if (problems.length) { bad++; fail(`alert ${a.alert}`, problems.join("; ")); }
    }
    if (!bad) pass(`alerts: all ${alerts.length} have for: and a runbook in deploy/runbooks/`);
}

// The dashboard (deploy/grafana/chunkd.json) and the rules query only metrics chunkd exports: every chunkd_* and
// process_* name they use (histograms with _bucket, _sum or _count) is a metric name in src/metrics.c. The
// dashboard's queries must also parse: each becomes a recording rule of a throwaway file for `promtool check rules`
// (Grafana's $__rate_interval and $variables replaced).
{
    const exported = new Set([...readFileSync(join(ROOT, "src/metrics.c"), "utf8").matchAll(/"((?:chunkd|process)_[a-z0-9_]+)"/g)].map((m) => m[1]));
    const known = (n) => exported.has(n) || exported.has(n.replace(/_(bucket|sum|count)$/, ""));
    const dash = JSON.parse(readFileSync(join(ROOT, "deploy/grafana/chunkd.json"), "utf8"));
    const exprs = [];  // {where, expr}
    const walk = (panels) => { for (const p of panels ?? []) {
        for (const t of p.targets ?? []) if (t.expr) exprs.push({ where: `panel ${p.id} "${p.title}"`, expr: t.expr });
        walk(p.panels);
    } };
    walk(dash.panels);
    for (const v of dash.templating?.list ?? []) if (v.definition) exprs.push({ where: `variable ${v.name}`, expr: v.definition, template: true });
    const rules = YAML.parse(readFileSync(RULES, "utf8")).groups.flatMap((g) => g.rules);
    for (const r of rules) exprs.push({ where: `rule ${r.alert ?? r.record}`, expr: r.expr });
    let bad = 0;
    for (const { where, expr } of exprs) {
        const unknown = [...new Set([...expr.matchAll(/\b((?:chunkd|process)_[a-z0-9_]+)\b/g)].map((m) => m[1]))].filter((n) => !known(n));
        if (unknown.length) { bad++; fail(where, `queries ${unknown.join(", ")}, not a metric of src/metrics.c`); }
    }
    if (!bad) pass(`metric names: the ${exprs.length} queries of the dashboard and the rules use only metrics of src/metrics.c`);
    const panelExprs = exprs.filter((e) => e.where.startsWith("panel "));
    const file = join(ensureDir(WORK), "dashboard-queries.yaml");
    writeFileSync(file, YAML.stringify({ groups: [{ name: "dashboard", rules: panelExprs.map((e, i) => ({
        record: `dashboard:query${i}`,
        expr: e.expr.replaceAll("$__rate_interval", "5m").replace(/\$(namespace|queue)/g, ".*"),
    })) }] }));
    const r = spawnSync("promtool", ["check", "rules", file], { encoding: "utf8" });
    if (r.error) fail("dashboard queries", `promtool: ${r.error.message}`);
    else if (r.status !== 0) fail("dashboard queries", (r.stdout + r.stderr).trim().split("\n").slice(-3).join(" "));
    else pass(`dashboard queries: all ${panelExprs.length} parse (promtool)`);
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Render.
const kubectl = spawnSync("kubectl", ["version", "--client"], { encoding: "utf8" });
if (kubectl.status !== 0) {
    fail("kubectl kustomize", "kubectl not found (it renders the kustomizations offline; see deploy/README.md)");
    finish();
}
const TARGETS = [
    { name: "base", dir: "deploy/base" },
    { name: "overlays/dev", dir: "deploy/overlays/dev" },
    { name: "overlays/prod", dir: "deploy/overlays/prod" },
    { name: "overlays/queue-example", dir: "deploy/overlays/queue-example" },
    { name: "batch/enqueue", dir: "deploy/batch/enqueue" },
    { name: "batch/work", dir: "deploy/batch/work" },
];
// redis-tls also after keda, as deploy/README.md (Managed Redis) lists them: it patches keda's TriggerAuthentication.
for (const c of ["keda", "hpa-cpu", "monitoring", "redis-tls", "keda+redis-tls"]) {
    const dir = join(WORK, `base+${c}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "kustomization.yaml"), YAML.stringify({
        apiVersion: "kustomize.config.k8s.io/v1beta1", kind: "Kustomization",
        resources: [relative(dir, join(ROOT, "deploy/base"))],
        components: c.split("+").map((one) => relative(dir, join(ROOT, "deploy/components", one))),
    }));
    TARGETS.push({ name: `base+components/${c}`, dir: relative(ROOT, dir) });
}

const rendered = [];  // {target, objects}
for (const t of TARGETS) {
    const r = spawnSync("kubectl", ["kustomize", t.dir], { cwd: ROOT, encoding: "utf8", maxBuffer: 64 << 20 });
    if (r.status !== 0) { fail(`render ${t.name}`, (r.stderr || r.error?.message || "").trim()); continue; }
    const docs = YAML.parseAllDocuments(r.stdout);
    const bad = docs.find((d) => d.errors.length);
    if (bad) { fail(`render ${t.name}`, bad.errors[0].message); continue; }
    const objects = docs.map((d) => d.toJS()).filter(Boolean);
    writeFileSync(join(ensureDir(WORK), `${t.name.replaceAll("/", "_")}.yaml`), r.stdout);
    pass(`render ${t.name}: ${objects.length} objects`);
    rendered.push({ target: t.name, objects });
}

function ensureDir(d) { mkdirSync(d, { recursive: true }); return d; }
const label = (t, o) => `${t} ${o.kind}/${o.metadata?.name}`;

// ---------------------------------------------------------------------------------------------------------------
// 2. Schemas.
function modelPath(apiVersion, kind) {
    const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
    if (group === "keda.sh") return `@kubernetes-models/keda/keda.sh/${version}/${kind}`;
    if (group === "monitoring.coreos.com") return `@kubernetes-models/prometheus-operator/monitoring.coreos.com/${version}/${kind}`;
    return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}
const strictLines = [];
const strictIndex = [];  // line number in strict.ts -> label
let strictImports = new Map();
for (const { target, objects } of rendered) {
    let ok = true;
    for (const o of objects) {
        const path = modelPath(o.apiVersion ?? "", o.kind ?? "");
        let mod;
        try { mod = await import(path); } catch { fail(label(target, o), `no schema for ${o.apiVersion} ${o.kind}`); ok = false; continue; }
        const Model = mod[o.kind];
        try { new Model(o).validate(); } catch (e) { fail(label(target, o), `schema: ${e.message}`); ok = false; }
        if (!strictImports.has(path)) strictImports.set(path, `T${strictImports.size}`);
        const json = JSON.stringify(o, null, 1).split("\n");
        strictIndex.push({ from: strictLines.length, to: strictLines.length + json.length, what: label(target, o) });
        strictLines.push(...json.map((l, i) => (i === 0 ? `export const o${strictIndex.length}: ${strictImports.get(path)} = ${l}` : l)));
        strictLines[strictLines.length - 1] += ";";
    }
    if (ok) pass(`schema ${target}: every object valid`);
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Strict: unknown fields, through TypeScript's excess-property checks against the same models' interfaces.
{
    const head = [...strictImports].map(([p, alias]) => `import type { I${p.split("/").pop()} as ${alias} } from "${p}";`);
    const file = join(WORK, "strict.ts");
    writeFileSync(file, [...head, ...strictLines, ""].join("\n"));
    writeFileSync(join(WORK, "tsconfig.json"), JSON.stringify({
        compilerOptions: { strict: true, noEmit: true, skipLibCheck: true, module: "nodenext", moduleResolution: "nodenext",
            target: "es2022", typeRoots: [], baseUrl: ".", paths: { "*": [join(HERE, "node_modules/*")] } },
        files: ["strict.ts"],
    }));
    const tsc = join(HERE, "node_modules/typescript/lib/tsc.js");
    const r = spawnSync(process.execPath, [tsc, "-p", join(WORK, "tsconfig.json")], { encoding: "utf8", cwd: WORK });
    const errs = (r.stdout + r.stderr).split("\n").filter((l) => /error TS\d+/.test(l));
    for (const e of errs) {
        const m = /strict\.ts\((\d+),\d+\): (error TS\d+: .*)/.exec(e);
        const line = m ? Number(m[1]) - 1 - head.length : -1;
        const at = strictIndex.find((x) => line >= x.from && line < x.to);
        fail(at ? at.what : "strict", `${m ? m[2] : e}${m ? ` (near ${strictLines[line]?.trim()})` : ""}`);
    }
    if (r.status === 0 && !errs.length) pass(`strict: no unknown fields in ${strictIndex.length} objects`);
    else if (!errs.length) fail("strict", `tsc exited ${r.status}: ${(r.stdout + r.stderr).trim().slice(0, 400)}`);
}

// ---------------------------------------------------------------------------------------------------------------
// 4. chunkd's own rules.
for (const { target, objects } of rendered) {
    const byKind = (k) => objects.filter((o) => o.kind === k);
    const configMaps = new Map(byKind("ConfigMap").map((c) => [c.metadata.name, c.data ?? {}]));
    const secrets = new Set(byKind("Secret").map((s) => s.metadata.name));
    const workloads = [...byKind("Deployment"), ...byKind("Job"), ...byKind("StatefulSet")];
    let queue;
    for (const w of workloads) {
        const pod = w.spec.template.spec;
        const what = label(target, w);
        const problems = [];
        const isChunkd = pod.containers.some((c) => /(^|\/)chunkd(:|$)/.test(c.image ?? ""));
        const psc = pod.securityContext ?? {};
        if (psc.runAsNonRoot !== true) problems.push("pod securityContext.runAsNonRoot is not true");
        if (psc.seccompProfile?.type !== "RuntimeDefault") problems.push("pod seccompProfile is not RuntimeDefault");
        for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
            const sc = c.securityContext ?? {};
            if (sc.allowPrivilegeEscalation !== false) problems.push(`${c.name}: allowPrivilegeEscalation is not false`);
            if (sc.readOnlyRootFilesystem !== true) problems.push(`${c.name}: readOnlyRootFilesystem is not true`);
            if (!(sc.capabilities?.drop ?? []).includes("ALL")) problems.push(`${c.name}: capabilities do not drop ALL`);
            for (const r of ["cpu", "memory"]) {
                if (!c.resources?.requests?.[r]) problems.push(`${c.name}: no ${r} request`);
                if (!c.resources?.limits?.[r]) problems.push(`${c.name}: no ${r} limit`);
            }
            for (const ref of c.envFrom ?? []) {
                if (ref.configMapRef && !configMaps.has(ref.configMapRef.name))
                    problems.push(`${c.name}: ConfigMap ${ref.configMapRef.name} is not in this render`);
            }
            if (!/(^|\/)chunkd(:|$)/.test(c.image ?? "")) continue;
            if (!c.image.endsWith(`:${VERSION}`)) problems.push(`${c.name}: image ${c.image} is not tagged ${VERSION}`);
            const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e]));
            const cfg = Object.assign({}, ...(c.envFrom ?? []).map((r) => configMaps.get(r.configMapRef?.name) ?? {}));
            const redis = env.REDIS_URL?.valueFrom?.secretKeyRef;
            if (!redis) problems.push(`${c.name}: REDIS_URL does not come from a Secret`);
            else if (target === "overlays/dev" && !secrets.has(redis.name))  // elsewhere the Secret is made by hand
                problems.push(`${c.name}: Secret ${redis.name} is not in this render`);
            if (!env.MALLOC_ARENA_MAX?.value) problems.push(`${c.name}: MALLOC_ARENA_MAX is not set`);
            const drainMs = Number(cfg.CHUNKD_DRAIN_TIMEOUT_MS ?? env.CHUNKD_DRAIN_TIMEOUT_MS?.value ?? 20000);
            const grace = pod.terminationGracePeriodSeconds ?? 30;
            if (grace * 1000 < drainMs + 10000)
                problems.push(`terminationGracePeriodSeconds ${grace} is not at least 10 s above the drain timeout (${drainMs} ms)`);
            queue = cfg.CHUNKD_QUEUE ?? env.CHUNKD_QUEUE?.value ?? queue;
            if (w.kind === "Deployment") {
                const port = Number(cfg.CHUNKD_HTTP_PORT ?? 8080);
                const cport = (c.ports ?? []).find((p) => p.name === "metrics")?.containerPort;
                if (cport !== port) problems.push(`${c.name}: port "metrics" is ${cport}, CHUNKD_HTTP_PORT is ${port}`);
                if (c.livenessProbe?.httpGet?.path !== "/healthz") problems.push(`${c.name}: livenessProbe is not GET /healthz`);
                if (c.readinessProbe?.httpGet?.path !== "/readyz") problems.push(`${c.name}: readinessProbe is not GET /readyz`);
                if (!(pod.topologySpreadConstraints ?? []).some((t) => t.topologyKey === "kubernetes.io/hostname"))
                    problems.push("no topology spread across nodes");
                const ann = w.spec.template.metadata?.annotations ?? {};
                if (ann["prometheus.io/scrape"] !== "true" || Number(ann["prometheus.io/port"]) !== port)
                    problems.push("pod scrape annotations missing or on the wrong port");
            }
            if (w.kind === "Job" && (c.args ?? []).includes("worker") && !(c.args ?? []).includes("--exit-when-empty")
                && cfg.CHUNKD_EXIT_WHEN_EMPTY !== "true")
                problems.push(`${c.name}: a worker Job without --exit-when-empty never completes`);
        }
        if (isChunkd || problems.length) {
            if (problems.length) fail(what, problems.join("; "));
            else pass(`${what}: probes, securityContext, resources, grace period, Redis secret`);
        }
    }
    for (const so of byKind("ScaledObject")) {
        const problems = scaledObjectProblems(so, objects, queue);
        if (problems.length) fail(label(target, so), problems.join("; "));
        else pass(`${label(target, so)}: target, queue, namespace, trigger keys and auth match`);
    }
    for (const dep of byKind("Deployment")) {
        const by = autoscalersOf(dep, objects);
        if (!by.length) continue;
        if (dep.spec.replicas !== undefined)
            fail(label(target, dep), `sets replicas: ${dep.spec.replicas} while ${by.join(", ")} owns the count (every apply would reset it)`);
        else pass(`${label(target, dep)}: no replicas, ${by.join(", ")} owns the count`);
    }
    // The Prometheus Operator picks these up only through its selectors (kube-prometheus-stack: `release`).
    for (const m of objects.filter((o) => ["ServiceMonitor", "PodMonitor", "PrometheusRule"].includes(o.kind))) {
        const release = m.metadata.labels?.release;
        if (release) pass(`${label(target, m)}: labelled release=${release} for the operator's selector`);
        else fail(label(target, m), "no release label: kube-prometheus-stack's default selector would not pick it up");
    }
    for (const pdb of byKind("PodDisruptionBudget")) {
        const sel = pdb.spec.selector.matchLabels;
        const hit = objects.some((o) => o.kind === "Deployment" &&
            Object.entries(sel).every(([k, v]) => o.spec.template.metadata.labels?.[k] === v));
        // Readiness follows Redis: in an outage every worker is unready, and only AlwaysAllow lets drains evict them.
        if (!hit) fail(label(target, pdb), "selects no Deployment's pods");
        else if (pdb.spec.unhealthyPodEvictionPolicy !== "AlwaysAllow")
            fail(label(target, pdb), "unhealthyPodEvictionPolicy is not AlwaysAllow (a Redis outage would stall every node drain)");
        else pass(`${label(target, pdb)}: selects the workers, evicts unready ones`);
    }
    checkNetwork(target, objects, byKind, configMaps);
    checkLabels(target, objects);
    checkPodSecurity(target, objects);
}
checkInstances(["overlays/prod", "overlays/queue-example"]);

checkNegativeFixtures();
finish();

// What a ScaledObject gets wrong: its target, a trigger of a type or with a key KEDA does not document, a redis list
// or prometheus query for another queue or namespace than the workers', a TriggerAuthentication not in the render.
function scaledObjectProblems(so, objects, queue) {
    const problems = [];
    const ns = so.metadata.namespace;
    const dep = objects.find((o) => o.kind === so.spec.scaleTargetRef.kind && o.metadata.name === so.spec.scaleTargetRef.name);
    if (!dep) problems.push(`scale target ${so.spec.scaleTargetRef.name} is not in this render`);
    for (const [i, t] of so.spec.triggers.entries()) {
        const known = KEDA_TRIGGER_KEYS[t.type];
        if (!known) { problems.push(`trigger ${i}: type ${t.type} is not one the checker knows the keys of`); continue; }
        for (const k of Object.keys(t.metadata ?? {}))
            if (!known.includes(k)) problems.push(`trigger ${i} (${t.type}): unknown metadata key "${k}" (KEDA's keys: ${known.join(", ")})`);
        if (t.type === "redis" && t.metadata.listName !== `chunkd:{${queue}}:pending`)
            problems.push(`redis trigger lists ${t.metadata.listName}, the queue is ${queue}`);
        if (t.type === "prometheus") {
            const q = t.metadata.query ?? "";
            if (!q.includes(`queue="${queue}"`)) problems.push(`prometheus trigger query does not select queue="${queue}"`);
            if (ns ? !q.includes(`namespace="${ns}"`) : !/namespace="[^"]+"/.test(q))
                problems.push(`prometheus trigger query does not select namespace="${ns ?? "..."}" (the same queue in another namespace would scale this one)`);
        }
        const auth = t.authenticationRef?.name;
        if (auth && !objects.some((o) => o.kind === "TriggerAuthentication" && o.metadata.name === auth))
            problems.push(`TriggerAuthentication ${auth} is not in this render`);
    }
    return problems;
}

// The autoscalers (ScaledObject, HorizontalPodAutoscaler) of a render that scale `dep`.
function autoscalersOf(dep, objects) {
    return objects.filter((o) => ["ScaledObject", "HorizontalPodAutoscaler"].includes(o.kind) &&
        o.spec.scaleTargetRef.name === dep.metadata.name && (o.spec.scaleTargetRef.kind ?? "Deployment") === dep.kind)
        .map((o) => `${o.kind}/${o.metadata.name}`);
}

// Negative fixtures (tests/deploy/fixtures/*): renders the checker must reject, each with the findings it must
// report. A check that lets a fixture through has stopped working.
function checkNegativeFixtures() {
    const FIXTURES = [
        {
            dir: "tests/deploy/fixtures/keda-typos",
            findings: (objects) => objects.flatMap((o) => o.kind === "ScaledObject"
                ? scaledObjectProblems(o, objects, "default")
                : o.kind === "Deployment" && autoscalersOf(o, objects).length && o.spec.replicas !== undefined
                    ? [`${o.kind}/${o.metadata.name} sets replicas`] : []),
            expect: ['unknown metadata key "listlength"', 'unknown metadata key "activationListLenght"',
                'unknown metadata key "treshold"', "sets replicas", 'does not select namespace="chunkd"'],
        },
    ];
    for (const f of FIXTURES) {
        const r = spawnSync("kubectl", ["kustomize", f.dir], { cwd: ROOT, encoding: "utf8", maxBuffer: 64 << 20 });
        if (r.status !== 0) { fail(`fixture ${f.dir}`, `does not render: ${(r.stderr || "").trim()}`); continue; }
        const found = f.findings(YAML.parseAllDocuments(r.stdout).map((d) => d.toJS()).filter(Boolean));
        const missed = f.expect.filter((e) => !found.some((x) => x.includes(e)));
        if (missed.length) fail(`fixture ${f.dir}`, `the checker let through: ${missed.join("; ")}`);
        else pass(`fixture ${f.dir}: rejected (${found.length} findings)`);
    }
}

// The app.kubernetes.io/* labels (components/common-labels) on every object: instance, managed-by, and version equal
// to the Makefile's.
function checkLabels(target, objects) {
    const missing = [];
    for (const o of objects) {
        const l = o.metadata.labels ?? {};
        const problems = [];
        if (!l["app.kubernetes.io/instance"]) problems.push("no app.kubernetes.io/instance");
        if (!l["app.kubernetes.io/managed-by"]) problems.push("no app.kubernetes.io/managed-by");
        if (l["app.kubernetes.io/version"] !== VERSION) problems.push(`app.kubernetes.io/version is ${l["app.kubernetes.io/version"]}, not ${VERSION}`);
        // Pods too (the batch Jobs' above all): dashboards and `kubectl get pods -l` find them by name.
        if (o.spec?.template?.metadata && !o.spec.template.metadata.labels?.["app.kubernetes.io/name"])
            problems.push("pod template without app.kubernetes.io/name");
        if (problems.length) missing.push(`${o.kind}/${o.metadata.name}: ${problems.join(", ")}`);
    }
    if (missing.length) fail(`${target} labels`, missing.join("; "));
    else pass(`${target} labels: instance, version ${VERSION} and managed-by on all ${objects.length} objects`);
}

// Pod Security Admission: every Namespace of a render enforces the restricted profile, and every pod template of
// the render meets it (the parts the securityContext rules above do not cover: host namespaces, privileged,
// added capabilities, volume types, root UID).
function checkPodSecurity(target, objects) {
    for (const ns of objects.filter((o) => o.kind === "Namespace")) {
        const l = ns.metadata.labels ?? {};
        if (l["pod-security.kubernetes.io/enforce"] === "restricted") pass(`${label(target, ns)}: enforces the restricted Pod Security profile`);
        else fail(label(target, ns), "no pod-security.kubernetes.io/enforce: restricted label");
    }
    const OK_VOLUMES = ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];
    for (const w of objects.filter((o) => o.spec?.template?.spec)) {
        const pod = w.spec.template.spec;
        const problems = [];
        for (const k of ["hostNetwork", "hostPID", "hostIPC"]) if (pod[k]) problems.push(`${k} is set`);
        if (pod.securityContext?.runAsUser === 0) problems.push("runs as UID 0");
        for (const v of pod.volumes ?? []) {
            const type = Object.keys(v).find((k) => k !== "name");
            if (!OK_VOLUMES.includes(type)) problems.push(`volume ${v.name} is ${type}`);
        }
        for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
            const sc = c.securityContext ?? {};
            if (sc.privileged) problems.push(`${c.name}: privileged`);
            if (sc.runAsUser === 0) problems.push(`${c.name}: runs as UID 0`);
            if ((sc.capabilities?.add ?? []).some((x) => x !== "NET_BIND_SERVICE")) problems.push(`${c.name}: adds capabilities`);
            if ((c.ports ?? []).some((p) => p.hostPort)) problems.push(`${c.name}: uses a hostPort`);
        }
        if (problems.length) fail(`${label(target, w)}: pod security`, `breaks the restricted profile: ${problems.join("; ")}`);
    }
}

// Instances (overlays/queue-example) next to each other in one namespace: no object name in common, and no
// selector of one (Deployment, Service, PodDisruptionBudget, NetworkPolicy) that matches the other's pods.
function checkInstances(names) {
    const renders = names.map((n) => rendered.find((r) => r.target === n)).filter(Boolean);
    if (renders.length !== names.length) { fail("instances", `${names.join(" and ")} did not both render`); return; }
    const id = (o) => `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;
    // Pod selectors only: the ServiceMonitor selects Services, and on purpose those of every instance.
    const POD_SELECTING = ["Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"];
    const selectors = (o) => !POD_SELECTING.includes(o.kind) ? [] : [o.spec?.selector?.matchLabels ?? (o.kind === "Service" ? o.spec?.selector : undefined),
        o.spec?.podSelector?.matchLabels].filter((s) => s && Object.keys(s).length);
    const podLabels = (objs) => objs.filter((o) => o.spec?.template?.metadata?.labels).map((o) => o.spec.template.metadata.labels);
    const matches = (sel, labels) => Object.entries(sel).every(([k, v]) => labels[k] === v);
    for (let i = 0; i < renders.length; i++) {
        for (let j = 0; j < renders.length; j++) {
            if (i === j) continue;
            const a = renders[i], b = renders[j];
            const problems = [];
            if (i < j) {
                const ids = new Set(a.objects.map(id));
                const same = b.objects.map(id).filter((x) => ids.has(x));
                if (same.length) problems.push(`objects in both: ${same.join(", ")}`);
            }
            for (const o of a.objects)
                for (const sel of selectors(o))
                    if (podLabels(b.objects).some((l) => matches(sel, l))) problems.push(`${o.kind}/${o.metadata.name} of ${a.target} selects pods of ${b.target}`);
            if (problems.length) fail(`instances ${a.target} and ${b.target}`, problems.join("; "));
            else pass(`instances ${a.target} and ${b.target}: ${i < j ? "no object name in common, " : ""}no selector of the first matches the second's pods`);
        }
    }
}

// Network isolation (base/networkpolicy.yaml): a NetworkPolicy selects the workers of every Deployment, for
// ingress and egress; ingress reaches only the metrics port, from namespaces chosen by label; every egress rule
// names its destinations and ports (none is open to everything), DNS among them; a Redis of the same render
// (dev) is reached through its pods' labels, and has a password from the Secret the workers' REDIS_URL comes from.
function checkNetwork(target, objects, byKind, configMaps) {
    const matches = (sel, labels) => !sel?.matchExpressions?.length &&
        Object.entries(sel?.matchLabels ?? {}).every(([k, v]) => labels?.[k] === v);
    const redis = byKind("StatefulSet").find((s) => s.spec.template.metadata.labels?.["app.kubernetes.io/component"] === "redis");
    for (const dep of byKind("Deployment")) {
        const labels = dep.spec.template.metadata.labels ?? {};
        if (labels["app.kubernetes.io/component"] !== "worker") continue;
        const what = `${label(target, dep)}: network`;
        const nps = byKind("NetworkPolicy").filter((np) => matches(np.spec.podSelector, labels));
        if (!nps.length) { fail(what, "no NetworkPolicy selects the workers' pods"); continue; }
        const problems = [];
        const cfg = Object.assign({}, ...(dep.spec.template.spec.containers[0].envFrom ?? [])
            .map((r) => configMaps.get(r.configMapRef?.name) ?? {}));
        const port = Number(cfg.CHUNKD_HTTP_PORT ?? 8080);
        const egress = nps.flatMap((np) => np.spec.egress ?? []);
        for (const np of nps) {
            const types = np.spec.policyTypes ?? [];
            if (!types.includes("Ingress") || !types.includes("Egress"))
                problems.push(`${np.metadata.name}: policyTypes is not [Ingress, Egress]`);
            for (const rule of np.spec.ingress ?? []) {
                if (!rule.from?.length || rule.from.some((f) => !f.namespaceSelector || f.ipBlock))
                    problems.push(`${np.metadata.name}: an ingress rule admits more than namespaces chosen by label`);
                if (!rule.ports?.length || rule.ports.some((p) => p.port !== "metrics" && Number(p.port) !== port))
                    problems.push(`${np.metadata.name}: an ingress rule opens more than the metrics port ${port}`);
            }
        }
        for (const rule of egress) {
            if (!rule.to?.length) problems.push("an egress rule allows every destination");
            if (!rule.ports?.length) problems.push("an egress rule allows every port");
            if ((rule.to ?? []).some((t) => ["0.0.0.0/0", "::/0"].includes(t.ipBlock?.cidr)))
                problems.push("an egress rule allows every address");
        }
        if (!egress.some((r) => (r.ports ?? []).some((p) => Number(p.port) === 53))) problems.push("no egress to DNS");
        if (redis) {
            const rl = redis.spec.template.metadata.labels;
            if (!egress.some((r) => (r.to ?? []).some((t) => t.podSelector && !t.namespaceSelector && matches(t.podSelector, rl))))
                problems.push(`no egress rule reaches the pods of StatefulSet ${redis.metadata.name}`);
            const rc = redis.spec.template.spec.containers[0];
            const args = rc.args ?? [];
            const pw = args[args.indexOf("--requirepass") + 1] ?? "";
            const pwEnv = (rc.env ?? []).find((e) => pw === `$(${e.name})`);
            const urlRef = dep.spec.template.spec.containers[0].env?.find((e) => e.name === "REDIS_URL")?.valueFrom?.secretKeyRef;
            const secret = byKind("Secret").find((x) => x.metadata.name === urlRef?.name);
            const url = secret?.data?.url ? Buffer.from(secret.data.url, "base64").toString() : secret?.stringData?.url ?? "";
            if (!args.includes("--requirepass") || !pwEnv?.valueFrom?.secretKeyRef)
                problems.push(`${redis.metadata.name}: no --requirepass from a Secret`);
            else if (pwEnv.valueFrom.secretKeyRef.name !== urlRef?.name)
                problems.push(`${redis.metadata.name}: its password is not in the workers' Secret ${urlRef?.name}`);
            if (!/^redis:\/\/[^@/]*:[^@/]+@/.test(url)) problems.push(`the workers' REDIS_URL (Secret ${urlRef?.name}) has no password`);
        }
        if (problems.length) fail(what, problems.join("; "));
        else pass(`${what}: NetworkPolicy ${nps.map((n) => n.metadata.name).join(", ")}${redis ? ", Redis with a password" : ""}`);
    }
}

function finish() {
    console.log(`check-deploy: ${passed} passed, ${failed} failed`);
    process.exit(failed ? 1 : 0);
}
