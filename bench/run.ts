/**
 * pg-warden's benchmark: the contenders side by side on real PostgreSQL, interleaved round by round,
 * under plain and interruption load; pool overhead without a database; memory growth.
 *
 *   npm run bench                       # full run (about 25 minutes on 2 cores)
 *   npm run bench -- --quick            # CI: every contender and the report, about 2 minutes
 *   npm run bench -- --only tx --rounds 5 --duration 3000
 *
 * Options: --quick, --only <substring> (repeatable; matches workload names, "pool-overhead" and
 * "memory"), --baseline DIR (pg-warden of another checkout, with its own node_modules, as one more
 * contender), --rounds N, --duration MS (measured time per run), --warmup MS, --contenders a,b
 * (keys: warden, sqlpg, pg, postgresjs, effect4, warden4, and only when named: wardenObserved, pg-warden with
 * metrics and leak detection on; wardenBouncer and pgBouncer, pg-warden and raw pg through a PgBouncer in
 * transaction mode that the run starts, Debian's pgbouncer package), --memory-ops N, --no-save, --report
 * <results.json> (rebuild the markdown and the chart of a saved run).
 * The Effect 4 contenders (effect4, warden4) run on effect4/'s Node 22 and dependency tree, which the
 * root's `npm ci` installs (its prepare script); the others on the Node that runs this script.
 * DATABASE_URL: use that server instead of an embedded one (the run creates table bench_accounts).
 * See bench/README.md for the method.
 */
import { execFileSync, spawn } from "node:child_process"
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { startBouncer } from "../test/support/pgbouncer.js"
import type { LoadResult } from "./lib/driver.mjs"
import { type BenchResults, markdownReport, type RunRecord, svgChart } from "./lib/report.js"
import { Admin, ROWS, redact, startServer } from "./lib/server.js"
import {
  benchDir,
  checkoutWorker,
  effect4Missing,
  effect4Worker,
  rootDir,
  tsWorker,
  Worker,
  type WorkerSpec
} from "./lib/workers.js"
import { allWorkloads, quickWorkloads, type Workload } from "./lib/workloads.js"

// ---------------------------------------------------------------------------------------------
// Options

const argv = process.argv.slice(2)
const flag = (name: string) => argv.includes(name)
const values = (name: string): Array<string> => {
  const out: Array<string> = []
  argv.forEach((arg, i) => {
    if (arg === name && argv[i + 1] !== undefined) out.push(argv[i + 1]!)
    else if (arg.startsWith(`${name}=`)) out.push(arg.slice(name.length + 1))
  })
  return out
}
const numberOption = (name: string): number | undefined => {
  const v = values(name)[0]
  if (v === undefined) return undefined
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} wants a positive number, got ${v}`)
  return n
}

const quick = flag("--quick")
const only = values("--only").flatMap((v) => v.split(","))
const matches = (name: string) => only.length === 0 || only.some((o) => name.includes(o))
const rounds = numberOption("--rounds") ?? (quick ? 2 : 3)
const durationMs = numberOption("--duration") ?? (quick ? 500 : 1_500)
const warmupMs = numberOption("--warmup") ?? (quick ? 200 : 400)
const memoryOps = numberOption("--memory-ops") ?? (quick ? 10_000 : 1_000_000)
/** Operations still running this long after the load stopped are reported as stuck. */
const drainTimeoutMs = quick ? 2_000 : 3_000
const save = !flag("--no-save")
const contenderKeys = values("--contenders").flatMap((v) => v.split(","))

const workloads = (quick ? quickWorkloads : allWorkloads).filter((w) => matches(w.name))
const runPoolOverhead = matches("pool-overhead")
const runMemory = matches("memory")

/**
 * `--baseline DIR`: pg-warden from another checkout (with its own node_modules) as one more
 * contender, `baseline`, so a change is measured against the code before it in the same run.
 */
const baselineDir = values("--baseline")[0]

const allContenders: ReadonlyArray<WorkerSpec> = [
  tsWorker("warden", "pg-warden"),
  ...(baselineDir !== undefined ? [checkoutWorker("baseline", baselineDir)] : []),
  tsWorker("sqlpg", "@effect/sql-pg 0.53"),
  tsWorker("pg", "pg Pool"),
  tsWorker("postgresjs", "postgres.js"),
  effect4Worker("effect4", "@effect/sql-pg 4"),
  effect4Worker("warden4", "pg-warden (Effect 4)"),
  tsWorker("wardenObserved", "pg-warden, metrics + leak detection"),
  tsWorker("wardenBouncer", "pg-warden through PgBouncer", { throughBouncer: true }),
  tsWorker("pgBouncer", "pg Pool through PgBouncer", { throughBouncer: true })
]
const effect4Keys: ReadonlyArray<string> = ["effect4", "warden4"]
/**
 * Run only when `--contenders` names them: pg-warden with its observability on, to measure what it costs, and
 * pg-warden and raw pg through PgBouncer in transaction mode (started for the run), to measure what PgBouncer costs.
 */
const optionalKeys: ReadonlyArray<string> = ["wardenObserved", "wardenBouncer", "pgBouncer"]

const log = (message: string) => process.stderr.write(`[bench ${((Date.now() - t0) / 1000).toFixed(1)}s] ${message}\n`)
const t0 = Date.now()

// ---------------------------------------------------------------------------------------------
// Which contenders run

/** A mistake on the command line or in the installation: the run stops with this message alone. */
class UsageError extends Error {}

/**
 * The contenders of this run: all, or those of `--contenders`. The Effect 4 ones need effect4/node_modules
 * (installed by the root's `npm ci`): without it the run stops and says how to install it.
 */
const selectContenders = (): ReadonlyArray<WorkerSpec> => {
  const unknown = contenderKeys.filter((k) => !allContenders.some((s) => s.key === k))
  if (unknown.length > 0) {
    throw new UsageError(
      `unknown contender ${unknown.join(", ")}: --contenders takes ${allContenders.map((s) => s.key).join(", ")}`
    )
  }
  const specs = allContenders.filter((s) =>
    contenderKeys.length === 0 ? !optionalKeys.includes(s.key) : contenderKeys.includes(s.key)
  )
  const missing = effect4Missing()
  if (missing.length > 0 && specs.some((s) => effect4Keys.includes(s.key))) {
    throw new UsageError(
      `the Effect 4 contenders (${effect4Keys.join(", ")}) run on effect4/'s node_modules, and ${missing.join(", ")} ${missing.length === 1 ? "is" : "are"} missing. ` +
        "Install it with `npm ci` at the root (its prepare script installs effect4/) or `npm ci --prefix effect4`, " +
        `or leave them out: --contenders ${allContenders
          .map((s) => s.key)
          .filter((k) => !effect4Keys.includes(k) && k !== "baseline")
          .join(",")}`
    )
  }
  return specs
}

// ---------------------------------------------------------------------------------------------
// One run: one workload, one contender, one round

const sameRow = (a: unknown, b: unknown): boolean => {
  const norm = (r: unknown) =>
    r !== null && typeof r === "object"
      ? JSON.stringify(
          Object.fromEntries(
            Object.entries(r as Record<string, unknown>)
              .map(([k, v]) => [k, String(v)] as const)
              .sort(([x], [y]) => (x < y ? -1 : 1))
          )
        )
      : String(r)
  return norm(a) === norm(b)
}

/** The implementations must agree before they are timed: same value, same row, a transaction that commits. */
const checkAgreement = async (admin: Admin, worker: Worker): Promise<{ ok: boolean; detail: string }> => {
  const before = await admin.balance(7)
  const got = await worker.send<{ select1: unknown; row: unknown }>("check", {}, 30_000)
  const after = await admin.balance(7)
  const expectedRow = await admin.row(42)
  const problems: Array<string> = []
  if (Number(got.select1) !== 1) problems.push(`SELECT 1 returned ${JSON.stringify(got.select1)}`)
  if (!sameRow(got.row, expectedRow)) {
    problems.push(`row 42 was ${JSON.stringify(got.row)}, the server has ${JSON.stringify(expectedRow)}`)
  }
  if (after !== before + 1) problems.push(`the transaction changed balance by ${after - before}, not 1`)
  return { ok: problems.length === 0, detail: problems.join("; ") || "agree" }
}

const seedOf = (workload: string, round: number): number => {
  let h = 2166136261
  for (const c of `${workload}#${round}`) h = Math.imul(h ^ c.charCodeAt(0), 16777619)
  return h >>> 0
}

const runOne = async (
  admin: Admin,
  url: string,
  worker: Worker,
  workload: Workload,
  round: number,
  measureMs = durationMs
): Promise<RunRecord> => {
  const appName = `bench-${worker.spec.key}`
  const record: RunRecord = { workload: workload.name, contender: worker.spec.key, round }
  await admin.terminateLeftovers(appName)
  try {
    const setup = await worker.send<{ ms: number }>(
      "setup",
      { url, appName, poolSize: workload.poolSize, rows: ROWS },
      30_000
    )
    record.setupMs = setup.ms
    record.check = await checkAgreement(admin, worker)
    const transactionsBefore = await admin.transactions()
    // The parent is idle while the worker runs: it samples the server's view meanwhile.
    let maxDuring = 0
    let maxIdleInTxDuring = 0
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        const view = await admin.view(appName).catch(() => undefined)
        if (view) {
          maxDuring = Math.max(maxDuring, view.total)
          maxIdleInTxDuring = Math.max(maxIdleInTxDuring, view.byState["idle in transaction"] ?? 0)
        }
        await new Promise((resolve) => setTimeout(resolve, 200))
      }
    })()
    const spec = {
      op: workload.op,
      clients: workload.clients,
      warmupMs,
      durationMs: measureMs,
      interrupt: workload.interrupt,
      seed: seedOf(workload.name, round),
      drainTimeoutMs
    }
    try {
      record.result = await worker.send<LoadResult & { extra: unknown }>(
        "run",
        spec,
        warmupMs + measureMs + drainTimeoutMs + 30_000
      )
    } finally {
      sampling = false
      await sampler
    }
    const afterRun = await admin.view(appName)
    const teardownStarted = performance.now()
    const teardown = await worker.send<{ ms: number }>("teardown", {}, 30_000)
    record.teardownMs = teardown.ms
    // Through PgBouncer, what it keeps pooled is idle and PgBouncer's: only busy backends count as left behind.
    const pooled = worker.spec.throughBouncer === true
    const atClose = await admin.view(appName, pooled)
    const afterClose = atClose.total === 0 ? atClose : await admin.waitGone(appName, 2_000, pooled)
    // Backends report their counts when they exit: through PgBouncer, end the server connections it pooled first.
    if (pooled) await admin.terminateLeftovers(appName)
    // Our own admin queries in between count too (a handful): negligible against thousands of operations.
    record.serverTransactions = (await admin.transactions()) - transactionsBefore
    record.server = {
      poolSize: workload.poolSize,
      afterRun,
      maxDuringRun: maxDuring,
      maxIdleInTransactionDuringRun: maxIdleInTxDuring,
      atClose,
      afterClose,
      afterCloseWaitedMs: performance.now() - teardownStarted
    }
  } catch (error) {
    record.error = String(error instanceof Error ? error.message : error).slice(0, 2_000)
    log(`  ${worker.spec.key}: ${record.error.split("\n")[0]}`)
    worker.kill()
  }
  record.terminatedLeftovers = await admin.terminateLeftovers(appName)
  return record
}

// ---------------------------------------------------------------------------------------------
// Pool overhead and memory (each in processes of their own)

const runChildJson = (args: ReadonlyArray<string>, timeoutMs: number): Promise<unknown> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...args], { cwd: rootDir, stdio: ["ignore", "pipe", "inherit"] })
    let out = ""
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString()
    })
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs)
    child.on("exit", (code) => {
      clearTimeout(timer)
      const last = out.trim().split("\n").pop() ?? ""
      try {
        resolve(JSON.parse(last))
      } catch {
        reject(new Error(`child ${args.join(" ")} exited ${code} without a JSON result`))
      }
    })
  })

const memoryCheckpoints = (): Array<number> =>
  memoryOps >= 1_000_000 ? [100_000, memoryOps] : [Math.round(memoryOps / 10), memoryOps]

const runMemoryFor = async (spec: WorkerSpec, url: string, admin: Admin): Promise<unknown> => {
  const worker = new Worker(spec)
  const appName = `bench-mem-${spec.key}`
  try {
    await worker.send("setup", { url, appName, poolSize: 8, rows: ROWS }, 30_000)
    const result = await worker.send(
      "memory",
      {
        op: "select1",
        clients: 8,
        warmupOps: Math.min(10_000, Math.round(memoryOps / 10)),
        checkpoints: memoryCheckpoints(),
        seed: 7
      },
      30 * 60_000
    )
    await worker.send("teardown", {}, 30_000)
    return { contender: spec.key, op: "select1", clients: 8, poolSize: 8, ...(result as object) }
  } catch (error) {
    return { contender: spec.key, error: String(error instanceof Error ? error.message : error).slice(0, 2_000) }
  } finally {
    await worker.stop()
    await admin.terminateLeftovers(appName)
  }
}

// ---------------------------------------------------------------------------------------------
// Main

const gitRevision = (): string => {
  try {
    const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: rootDir }).toString().trim()
    // The sources the contenders run: the Effect 3 edition's (with the core), and the Effect 4 edition's.
    const modified = ["src", "effect4/src"].filter(
      (dir) => execFileSync("git", ["status", "--porcelain", "--", dir], { cwd: rootDir }).toString().trim() !== ""
    )
    return modified.length === 0 ? head : `${head} (${modified.map((dir) => `${dir}/`).join(", ")} modified)`
  } catch {
    return "unknown"
  }
}

const commandLine = (): string =>
  process.env.npm_lifecycle_event === "bench"
    ? `npm run bench${argv.length > 0 ? ` -- ${argv.join(" ")}` : ""}`
    : `tsx bench/run.ts ${argv.join(" ")}`.trim()

const main = async () => {
  const started = new Date()
  const specs = selectContenders()

  log(`starting PostgreSQL (${process.env.DATABASE_URL ? "DATABASE_URL" : "embedded"})`)
  const server = await startServer()
  const admin = await Admin.open(server.url)
  const bouncer = specs.some((spec) => spec.throughBouncer === true)
    ? await startBouncer(server.url, { poolSize: 80 })
    : undefined
  if (bouncer !== undefined && "skipped" in bouncer) {
    await admin.close()
    await server.dispose()
    throw new UsageError(`the PgBouncer contenders need PgBouncer: ${bouncer.skipped}`)
  }
  if (bouncer !== undefined) log(`${bouncer.version} (transaction mode) in front of the server`)
  const urlFor = (worker: Worker) =>
    worker.spec.throughBouncer === true && bouncer !== undefined ? bouncer.url : server.url
  const workers = specs.map((spec) => new Worker(spec))
  const results: BenchResults = {
    meta: {
      date: started.toISOString(),
      command: commandLine(),
      mode: quick ? "quick" : "full",
      rounds,
      warmupMs,
      durationMs,
      only,
      git: gitRevision(),
      node: process.version,
      os: `${os.type()} ${os.release()} ${os.arch()}`,
      cpus: `${os.cpus().length} × ${os.cpus()[0]?.model ?? "unknown"}`,
      loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
      totalMemGB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
      server: { kind: server.kind, url: redact(server.url), ...(await admin.serverInfo()) },
      durationS: 0
    },
    contenders: [],
    workloads: workloads.map((w) => ({ ...w })),
    runs: [],
    poolOverhead: null,
    memory: []
  }

  try {
    await admin.createSchema()
    for (const worker of workers) {
      const hello = await worker.send<{ name: string; versions: Record<string, string>; node: string }>(
        "hello",
        {},
        60_000
      )
      results.contenders.push({
        key: worker.spec.key,
        label: worker.spec.label,
        versions: hello.versions,
        node: hello.node
      })
    }
    // A worker's first run would otherwise pay for its JIT warm-up: one unrecorded run per process first.
    if (workloads.length > 0) {
      log("warming up each contender's process")
      const warm = { name: "warm-up", group: "warm-up", op: "row", poolSize: 8, clients: 8, interrupt: null } as const
      for (const worker of workers) await runOne(admin, urlFor(worker), worker, warm, 0, quick ? 400 : 1_000)
    }
    log(
      `${workloads.length} workloads × ${workers.length} contenders × ${rounds} rounds, ${warmupMs} + ${durationMs} ms each`
    )

    for (const workload of workloads) {
      for (let round = 1; round <= rounds; round++) {
        const line: Array<string> = []
        for (const worker of workers) {
          const record = await runOne(admin, urlFor(worker), worker, workload, round)
          results.runs.push(record)
          line.push(
            `${worker.spec.key} ${record.result ? Math.round(record.result.opsPerSec) : "ERR"}${record.check && !record.check.ok ? " (DISAGREES)" : ""}`
          )
        }
        log(`${workload.name} round ${round}: ${line.join(", ")} ops/s`)
      }
    }
    await Promise.all(workers.map((w) => w.stop()))

    if (runPoolOverhead) {
      log("pool overhead (no database)")
      results.poolOverhead = await runChildJson(
        [
          "--expose-gc",
          "--import",
          path.join(rootDir, "node_modules", "tsx", "dist", "loader.mjs"),
          path.join(benchDir, "pool-overhead.ts"),
          "--json",
          ...(quick ? ["--quick"] : [])
        ],
        15 * 60_000
      ).catch((error) => ({ error: String(error) }))
    }

    if (runMemory) {
      for (const spec of specs) {
        log(`memory: ${spec.key}, ${memoryOps.toLocaleString("en-US")} operations`)
        const url = spec.throughBouncer === true && bouncer !== undefined ? bouncer.url : server.url
        results.memory.push(await runMemoryFor(spec, url, admin))
      }
    }
  } finally {
    await Promise.all(workers.map((w) => w.stop().catch(() => undefined)))
    await admin.close().catch(() => undefined)
    await bouncer?.dispose()
    await server.dispose()
  }

  results.meta.durationS = Math.round((Date.now() - t0) / 100) / 10
  const markdown = markdownReport(results)
  const svg = svgChart(results)
  process.stdout.write(`${markdown}\n`)
  if (save) {
    const dir = path.join(benchDir, "results")
    mkdirSync(dir, { recursive: true })
    const stamp = started.toISOString().replace(/:/g, "-").replace(/\..*/, "")
    const base = path.join(dir, `${stamp}-${quick ? "quick" : "full"}${only.length > 0 ? "-partial" : ""}`)
    writeFileSync(`${base}.json`, `${JSON.stringify(results, null, 2)}\n`)
    writeFileSync(`${base}.md`, markdown)
    writeFileSync(`${base}.svg`, svg)
    const complete = !quick && only.length === 0 && contenderKeys.length === 0
    if (complete) {
      writeFileSync(path.join(dir, "latest.md"), markdown)
      writeFileSync(path.join(dir, "latest.svg"), svg)
      updateBenchReadme(markdown, path.basename(base))
    }
    formatWithBiome([
      `${base}.json`,
      `${base}.md`,
      ...(complete ? [path.join(dir, "latest.md"), path.join(benchDir, "README.md")] : [])
    ])
    log(`wrote ${path.relative(rootDir, base)}.{json,md,svg}${complete ? " and results/latest.{md,svg}" : ""}`)
  }
  log(`done in ${results.meta.durationS} s`)
}

/**
 * The generated markdown and JSON live in the repository, which `biome check bench` lints: they are
 * written in biome's own format so that a committed run never fails the lint.
 */
const formatWithBiome = (files: ReadonlyArray<string>) => {
  const biome = path.join(rootDir, "node_modules", ".bin", "biome")
  try {
    execFileSync(biome, ["format", "--write", ...files], { cwd: rootDir, stdio: ["ignore", "ignore", "pipe"] })
  } catch (error) {
    log(`could not format ${files.length} generated files with biome: ${String(error).split("\n")[0]}`)
  }
}

/** Replaces the "latest results" section of bench/README.md (between its markers) after a full run. */
const updateBenchReadme = (markdown: string, base: string) => {
  const file = path.join(benchDir, "README.md")
  if (!existsSync(file)) return
  const text = readFileSync(file, "utf8")
  const start = "<!-- latest-results:start -->"
  const end = "<!-- latest-results:end -->"
  const i = text.indexOf(start)
  const j = text.indexOf(end)
  if (i < 0 || j < i) return
  const body = `\n_From \`results/${base}.json\`; chart: \`results/latest.svg\`._\n\n![throughput and interruption latency](results/latest.svg)\n\n${markdown.replace(/^# .*\n/, "")}\n`
  writeFileSync(file, text.slice(0, i + start.length) + body + text.slice(j))
}

/** `--report <results.json>`: rebuilds the markdown and the chart from a saved run, without running anything. */
const rebuildReport = (file: string) => {
  const results = JSON.parse(readFileSync(file, "utf8")) as BenchResults
  const base = file.replace(/\.json$/, "")
  const markdown = markdownReport(results)
  writeFileSync(`${base}.md`, markdown)
  writeFileSync(`${base}.svg`, svgChart(results))
  const complete = results.meta.mode === "full" && results.meta.only.length === 0
  if (complete && path.resolve(path.dirname(file)) === path.join(benchDir, "results")) {
    writeFileSync(path.join(benchDir, "results", "latest.md"), markdown)
    writeFileSync(path.join(benchDir, "results", "latest.svg"), svgChart(results))
    updateBenchReadme(markdown, path.basename(base))
    formatWithBiome([path.join(benchDir, "results", "latest.md"), path.join(benchDir, "README.md")])
  }
  formatWithBiome([`${base}.md`])
  process.stdout.write(`${markdown}\n`)
}

const reportFrom = values("--report")[0]
;(reportFrom !== undefined ? Promise.resolve().then(() => rebuildReport(reportFrom)) : main()).then(
  () => process.exit(0),
  (error) => {
    console.error(error instanceof UsageError ? `bench: ${error.message}` : error)
    process.exit(1)
  }
)
