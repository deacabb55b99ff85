/**
 * `pg-warden demo`: the promise shown on a real server. Runs each scenario against `@effect/sql-pg`
 * and pg-warden (separate `application_name`s, the live clock), shows live progress, then prints
 * what was measured side by side and one verdict line per contender. It reports what it measured,
 * whatever that is; every run is bounded, so the demo always ends in about the time asked for.
 *
 * @since 0.1.0
 */
import { createRequire } from "node:module"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import { type Live, type LiveView, live } from "./live.js"
import { colorFor, formatMs, type Paint, painter, plural, table } from "./report.js"
import {
  defaultDeadlines,
  demoScenarios,
  effect4Available,
  makeStats,
  type RunResult,
  runApplicationName,
  runScenario,
  type Sample,
  sqlPg,
  sqlPg4,
  warden,
  warden4
} from "./scenarios.js"
import { type CliError, countStates, observer, parseTarget, type StateCounts } from "./server.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface DemoOptions {
  readonly url: string | undefined
  /** About how long the whole demo should take. */
  readonly durationMs: number
  /** Progress to stderr, the results as JSON to stdout. */
  readonly json: boolean
}

const require = createRequire(import.meta.url)
const versionOf = (name: string): string => {
  try {
    return (require(`${name}/package.json`) as { version: string }).version
  } catch {
    return "?"
  }
}

/** A package's version in the repository's Effect 4 tree (effect4/node_modules). */
const effect4Version = (name: string): string => {
  try {
    return (require(`../../effect4/node_modules/${name}/package.json`) as { version: string }).version
  } catch {
    return "?"
  }
}

/** The library's version; in this repository (where its name resolves to src/) the same as the CLI's. */
const wardenVersion = (): string => {
  const installed = versionOf("pg-warden")
  return installed !== "?" ? installed : (require("../package.json") as { version: string }).version
}

const EMPTY: StateCounts = { total: 0, active: 0, idle: 0, idleInTransaction: 0, other: 0 }

/** The sample at percentile `p` (nearest rank), so that an unfinished one can be marked. */
const sampleAt = (samples: ReadonlyArray<Sample>, p: number): Sample | undefined => {
  if (samples.length === 0) return undefined
  const sorted = [...samples].sort((a, b) => a.ms - b.ms)
  return sorted[Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length))) - 1]
}

const showSample = (sample: Sample | undefined): string =>
  sample === undefined ? "–" : `${sample.done ? "" : ">"}${formatMs(sample.ms)}`

/**
 * A run's numbers, as printed and as JSON.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunSummary {
  readonly scenario: string
  readonly contender: string
  readonly applicationName: string
  readonly ok: number
  readonly interrupted: number
  readonly latencyMs: {
    readonly p50: number | null
    readonly p99: number | null
    readonly max: number | null
    /** Interruptions that had still not ended when the demo finished. */
    readonly unfinished: number
  }
  readonly hung: number
  readonly collateral: number
  readonly failures: ReadonlyArray<{ readonly message: string; readonly count: number }>
  readonly running: number
  readonly idleInTransaction: number
  /** Daemon transactions that committed after the Layer's close was asked for. */
  readonly committedAfterClose: number
  readonly left: number
  readonly leftByState: StateCounts
  readonly terminated: number
  readonly closeMs: number | null
  readonly wallMs: number
  readonly notes: ReadonlyArray<string>
}

const summarize = (r: RunResult): RunSummary => {
  const s = r.stats
  const at = (p: number) => sampleAt(s.latencies, p)?.ms ?? null
  return {
    scenario: r.scenario.id,
    contender: r.contender.id,
    applicationName: r.app,
    ok: s.ok,
    interrupted: s.interrupted,
    latencyMs: {
      p50: at(50),
      p99: at(99),
      max: at(100),
      unfinished: s.latencies.filter((l) => !l.done).length
    },
    hung: s.hung,
    collateral: s.collateral,
    failures: [...s.failures.entries()].sort((a, b) => b[1] - a[1]).map(([message, count]) => ({ message, count })),
    running: s.running,
    idleInTransaction: s.idleInTx,
    committedAfterClose: s.committedAfterClose,
    left: r.left.total,
    leftByState: r.left,
    terminated: r.terminated,
    closeMs: r.closeMs ?? null,
    wallMs: Math.round(r.wallMs),
    notes: s.notes
  }
}

const problemCount = (r: RunResult) =>
  r.stats.hung +
  r.stats.collateral +
  r.stats.running +
  r.stats.idleInTx +
  r.stats.committedAfterClose +
  r.left.total +
  r.stats.notes.length +
  (r.closeMs === undefined ? 1 : 0)

const runLine = (r: RunResult, paint: Paint): string => {
  const s = r.stats
  const bad = problemCount(r) > 0
  const mark = bad ? paint("fail", "✘") : paint("pass", "✔")
  const num = (n: number, text: string) => (n > 0 ? paint("fail", text) : text)
  const max = showSample(sampleAt(s.latencies, 100))
  const leftText =
    r.left.total > 0
      ? paint(
          "fail",
          `${plural(r.left.total, "backend")} left (${r.left.active} active, ${r.left.idleInTransaction} idle in tx, ${r.left.idle} idle), terminated by the demo`
        )
      : "0 left"
  const parts = [
    `${s.ok} ok`,
    `${s.interrupted} interrupted (max ${max}${s.hung > 0 ? paint("fail", `, ${s.hung} hung`) : ""})`,
    num(s.collateral, `${s.collateral} collateral`),
    `server after the interruptions: ${num(s.running, `${s.running} still running`)}, ${num(s.idleInTx, `${s.idleInTx} idle in tx`)}`,
    r.closeMs === undefined ? paint("fail", "closing the layer hung > 3 s") : `layer closed in ${formatMs(r.closeMs)}`,
    leftText
  ]
  const notes = s.notes.length > 0 ? `\n      ${paint("warn", s.notes.join("; "))}` : ""
  return `  ${mark} ${paint("bold", `${r.scenario.title} · ${r.contender.label}`)}  ${parts.slice(0, 3).join(" · ")}\n      ${parts.slice(3).join(" · ")}${notes}`
}

/**
 * The side-by-side table of all runs.
 *
 * @since 0.1.0
 * @category rendering
 */
export const resultTable = (results: ReadonlyArray<RunResult>, paint: Paint): Array<string> => {
  const red = (n: number) => (n > 0 ? paint("fail", String(n)) : String(n))
  const rows: Array<ReadonlyArray<string> | "rule"> = []
  let previous: string | undefined
  for (const r of results) {
    if (previous !== undefined && previous !== r.scenario.id) rows.push("rule")
    const s = r.stats
    rows.push([
      previous === r.scenario.id ? "" : r.scenario.title,
      r.contender.label,
      String(s.ok),
      String(s.interrupted),
      showSample(sampleAt(s.latencies, 50)),
      showSample(sampleAt(s.latencies, 99)),
      showSample(sampleAt(s.latencies, 100)),
      red(s.hung),
      red(s.collateral),
      red(s.running),
      red(s.idleInTx),
      red(s.committedAfterClose),
      red(r.left.total)
    ])
    previous = r.scenario.id
  }
  return table(
    [
      { header: "scenario" },
      { header: "contender" },
      { header: "ok", align: "right" },
      { header: "interrupted", align: "right" },
      { header: "p50", align: "right" },
      { header: "p99", align: "right" },
      { header: "max", align: "right" },
      { header: "hung", align: "right" },
      { header: "collateral", align: "right" },
      { header: "running", align: "right" },
      { header: "idle in tx", align: "right" },
      { header: "committed", align: "right" },
      { header: "left", align: "right" }
    ],
    rows,
    paint
  )
}

const legend = (interruptMs: number): Array<string> => [
  "ok: operations that succeeded · interrupted: fibers interrupted while running",
  "p50/p99/max: from interrupting a fiber to the fiber ending (> = had not ended yet)",
  `hung: interrupted fibers that had not ended ${formatMs(interruptMs)} later · collateral: fibers nobody interrupted that failed or got no result`,
  "running / idle in tx: backends the server showed still running the interrupted statement / idle in transaction after the interruptions",
  "committed: daemon transactions that committed after the Layer's close was asked for (txid_status)",
  "left: backends the server still showed after the layer was closed (the demo then terminated them)"
]

/**
 * A contender's verdict from its runs: one sentence of what was measured.
 *
 * @since 0.1.0
 * @category rendering
 */
export const verdict = (
  runs: ReadonlyArray<RunResult>,
  interruptMs: number
): { readonly ok: boolean; readonly text: string } => {
  const samples = runs.flatMap((r) => r.stats.latencies)
  const interrupted = runs.reduce((n, r) => n + r.stats.interrupted, 0)
  const hung = runs.reduce((n, r) => n + r.stats.hung, 0)
  const collateral = runs.reduce((n, r) => n + r.stats.collateral, 0)
  const running = runs.reduce((n, r) => n + r.stats.running, 0)
  const idleInTx = runs.reduce((n, r) => n + r.stats.idleInTx, 0)
  const left = runs.reduce((n, r) => n + r.left.total, 0)
  const committed = runs.reduce((n, r) => n + r.stats.committedAfterClose, 0)
  const closeHung = runs.filter((r) => r.closeMs === undefined).length
  const notes = runs.flatMap((r) => r.stats.notes.map((n) => `${r.scenario.title}: ${n}`))
  const max = sampleAt(samples, 100)
  const p99 = sampleAt(samples, 99)
  const failures = new Map<string, number>()
  for (const r of runs) for (const [m, c] of r.stats.failures) failures.set(m, (failures.get(m) ?? 0) + c)
  const common = [...failures.entries()].sort((a, b) => b[1] - a[1])[0]
  const problems: Array<string> = []
  if (hung > 0) {
    problems.push(
      `${hung} of ${interrupted} interruptions had not ended after ${formatMs(interruptMs)} (slowest ${showSample(max)})`
    )
  }
  if (collateral > 0) {
    problems.push(
      `${plural(collateral, "fiber")} nobody interrupted failed${common ? ` (most often: "${common[0]}")` : ""}`
    )
  }
  if (running > 0) problems.push(`the server kept running ${plural(running, "interrupted statement")}`)
  if (idleInTx > 0) problems.push(`the server showed ${plural(idleInTx, "backend")} idle in transaction`)
  if (committed > 0) {
    problems.push(`${plural(committed, "daemon transaction")} committed after the Layer's close was asked for`)
  }
  if (left > 0) problems.push(`${plural(left, "backend")} outlived the layer`)
  if (closeHung > 0) problems.push(`closing the layer hung ${plural(closeHung, "time")}`)
  problems.push(...notes)
  if (problems.length === 0) {
    return {
      ok: true,
      text: `all ${interrupted} interruptions ended within ${showSample(max)} (p99 ${showSample(p99)}); no fiber failed that nobody interrupted; the server showed nothing running, idle in transaction or left behind`
    }
  }
  return { ok: false, text: problems.join("; ") }
}

/**
 * Runs the demo.
 *
 * @since 0.1.0
 * @category commands
 */
export const demo = (options: DemoOptions): Effect.Effect<void, CliError> =>
  Effect.scoped(
    Effect.gen(function* () {
      const target = yield* parseTarget(options.url)
      const out = options.json ? process.stderr : process.stdout
      const paint = painter(colorFor(out))
      const print = (line = "") => Effect.sync(() => out.write(`${line}\n`))
      const obs = yield* observer(target, "pg-warden-demo-observer", 5_000)
      const [server] = yield* obs.query<{ version: string }>("SELECT current_setting('server_version') AS version")
      const deadlines = defaultDeadlines
      const scenarios = demoScenarios(options.durationMs, deadlines)
      const withEffect4 = effect4Available()
      const contenders = withEffect4 ? [sqlPg, warden, sqlPg4, warden4] : [sqlPg, warden]

      yield* print(paint("bold", "pg-warden demo: a PostgreSQL connection never outlives its scope"))
      yield* print(`  server      PostgreSQL ${server?.version ?? "?"} at ${target.display}`)
      yield* print(
        `  Effect 3    @effect/sql-pg ${versionOf("@effect/sql-pg")} (PgClient.layer, library defaults) vs pg-warden ${wardenVersion()} (WardenClient.layer, defaults); pg ${versionOf("pg")}, effect ${versionOf("effect")}, Node ${process.versions.node}`
      )
      yield* print(
        withEffect4
          ? `  Effect 4    @effect/sql-pg ${effect4Version("@effect/sql-pg")} (PgClient.layer, library defaults) vs pg-warden's Effect 4 edition (WardenClient.layer, defaults); effect ${effect4Version("effect")}, on effect4/'s Node 22, each run in a process of its own`
          : "  Effect 4    not shown: the Effect 4 contenders run only from the repository (effect4/ installed)"
      )
      yield* print("  scenarios")
      for (const [i, s] of scenarios.entries()) yield* print(`    ${i + 1}. ${s.title.padEnd(19)} ${s.description}`)
      yield* print(
        paint(
          "dim",
          "  Every run has its own application_name; afterwards the demo reads pg_stat_activity from a separate session, then terminates leftovers."
        )
      )
      yield* print()

      const display: Live = yield* live(out, paint)
      const results: Array<RunResult> = []
      const total = scenarios.length * contenders.length
      let index = 0
      const demoStarted = performance.now()
      for (const scenario of scenarios) {
        for (const contender of contenders) {
          index++
          const app = runApplicationName("pg-warden-demo", contender, scenario)
          const stats = makeStats()
          const view: LiveView = {
            label: `[${index}/${total}] ${scenario.title} · ${contender.label}`,
            startedAt: performance.now(),
            plannedMs: scenario.plannedMs,
            stats,
            server: EMPTY
          }
          display.show(view)
          const sampler = yield* Effect.fork(
            obs.backends(app).pipe(
              Effect.tap((backends) => Effect.sync(() => (view.server = countStates(backends)))),
              Effect.ignore,
              Effect.repeat(Schedule.spaced(200))
            )
          )
          const result = yield* runScenario({
            url: target.url,
            contender,
            scenario,
            observer: obs,
            app,
            stats,
            deadlines
          }).pipe(Effect.ensuring(Fiber.interrupt(sampler)))
          display.show(undefined)
          results.push(result)
          display.log(runLine(result, paint))
        }
      }
      const elapsed = performance.now() - demoStarted
      yield* print()
      yield* print(paint("bold", `Results (${formatMs(elapsed)}, measured on this machine, live clock)`))
      for (const line of resultTable(results, paint)) yield* print(`  ${line}`)
      yield* print()
      for (const line of legend(deadlines.interruptMs)) yield* print(paint("dim", `  ${line}`))
      yield* print()
      yield* print(paint("bold", "Verdict"))
      const verdicts = contenders.map((c) => ({
        contender: c,
        ...verdict(
          results.filter((r) => r.contender.id === c.id),
          deadlines.interruptMs
        )
      }))
      const width = Math.max(...contenders.map((c) => c.label.length))
      for (const v of verdicts) {
        yield* print(
          `  ${v.ok ? paint("pass", "✔") : paint("fail", "✘")} ${paint("bold", v.contender.label.padEnd(width))}  ${v.text}.`
        )
      }
      if (options.json) {
        process.stdout.write(
          `${JSON.stringify(
            {
              server: { version: server?.version ?? null, url: target.display },
              durationMs: Math.round(elapsed),
              runs: results.map(summarize),
              verdicts: verdicts.map((v) => ({ contender: v.contender.id, ok: v.ok, text: v.text }))
            },
            null,
            2
          )}\n`
        )
      }
    })
  )
