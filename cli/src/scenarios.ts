/**
 * The demo's runs (and what `check` reuses): the shared interruption scenarios
 * (./interruptions.ts, bodies in ./interruptions-effect3.ts) against each contender, with what they
 * report accumulated in a {@link RunStats}: interruption latencies, fibers that failed although
 * nobody interrupted them, and what the server showed afterwards.
 *
 * Every wait is bounded: a contender whose interruption never completes cannot hold the demo; the
 * hang is recorded, and the fiber is left to end whenever it does (its backends are terminated by
 * the runner).
 *
 * @since 0.1.0
 */
import { randomBytes } from "node:crypto"
import * as SqlClient from "@effect/sql/SqlClient"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as WardenClient from "pg-warden/WardenClient"
import * as Interruptions from "./interruptions.js"
import {
  describeExit,
  interruptReported,
  probeReported,
  type Run,
  repro,
  type ScenarioFailure,
  saturation,
  storm
} from "./interruptions-effect3.js"
import { CliError, countStates, type Observer, type StateCounts } from "./server.js"

/**
 * A client layer under test.
 *
 * @since 0.1.0
 * @category models
 */
export interface Contender {
  readonly id: string
  readonly label: string
  readonly layer: (
    url: string,
    applicationName: string,
    maxConnections: number
  ) => Layer.Layer<SqlClient.SqlClient, unknown>
}

/**
 * `@effect/sql-pg` 0.53 with its defaults: `PgClient.layer`.
 *
 * @since 0.1.0
 * @category contenders
 */
export const sqlPg: Contender = {
  id: "sqlpg",
  label: "@effect/sql-pg",
  layer: (url, applicationName, maxConnections) =>
    PgClient.layer({ url: Redacted.make(url), applicationName, maxConnections })
}

/**
 * pg-warden with its defaults: `WardenClient.layer`.
 *
 * @since 0.1.0
 * @category contenders
 */
export const warden: Contender = {
  id: "warden",
  label: "pg-warden",
  layer: (url, applicationName, maxConnections) =>
    WardenClient.layer({ url: Redacted.make(url), applicationName, maxConnections })
}

/**
 * How long one interruption took: from interrupting the fiber to the fiber ending. `done` is false
 * while the fiber has not ended yet (`ms` is then how long it has been waited for).
 *
 * @since 0.1.0
 * @category models
 */
export type Sample = Interruptions.Interruption

/**
 * What a run measured. Mutable: the live display reads it while the run goes on.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunStats {
  /** Operations that completed successfully (transactions, statements, probes). */
  ok: number
  /** Fibers that were interrupted while still running. */
  interrupted: number
  /** Interruptions not done within the deadline. */
  hung: number
  /** Fibers nobody interrupted that failed, or got no result within their deadline. */
  collateral: number
  /** Messages of the collateral failures, with how often each was seen. */
  readonly failures: Map<string, number>
  readonly latencies: Array<Sample>
  /** Most backends seen still running the interrupted statement after the interruptions. */
  running: number
  /** Most backends seen idle in transaction after the interruptions. */
  idleInTx: number
  readonly notes: Array<string>
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const makeStats = (): RunStats => ({
  ok: 0,
  interrupted: 0,
  hung: 0,
  collateral: 0,
  failures: new Map(),
  latencies: [],
  running: 0,
  idleInTx: 0,
  notes: []
})

/**
 * The deadlines of a run, in milliseconds.
 *
 * @since 0.1.0
 * @category models
 */
export type Deadlines = Interruptions.Deadlines

/**
 * The defaults: 2 s to end an interrupted fiber, 1.5 s for a probe, 300 ms to settle.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaultDeadlines: Deadlines = { interruptMs: 2_000, probeMs: 1_500, settleMs: 300 }

/**
 * What a scenario needs besides the client.
 *
 * @since 0.1.0
 * @category models
 */
export interface ScenarioContext {
  readonly observer: Observer
  /** The `application_name` of the contender's connections in this run. */
  readonly app: string
  readonly stats: RunStats
  readonly deadlines: Deadlines
}

const now = () => performance.now()

const recordFailure = (stats: RunStats, message: string) => {
  stats.collateral++
  stats.failures.set(message, (stats.failures.get(message) ?? 0) + 1)
}

/** A fiber nobody interrupted: a success counts as done, anything else as collateral. */
const account = (stats: RunStats, ending: Interruptions.Ending) => {
  if (ending._tag === "Success") stats.ok++
  else recordFailure(stats, ending.description)
}

/**
 * A reporter that accumulates what a scenario reports into `stats`, and never stops it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const reportTo = (stats: RunStats): Interruptions.Reporter => ({
  interrupting: (interruption) => {
    stats.latencies.push(interruption)
    stats.interrupted++
  },
  interrupted: (interruption) => {
    if (interruption.hung) stats.hung++
  },
  endedBefore: (ending) => account(stats, ending),
  after: (view) => {
    stats.running = Math.max(stats.running, view.running.length)
    stats.idleInTx = Math.max(stats.idleInTx, view.inTransaction.length)
  },
  probe: (report) =>
    report.ending === undefined
      ? recordFailure(stats, `${report.what}: no result within ${report.deadlineMs} ms`)
      : account(stats, report.ending)
})

/**
 * Interrupts `fiber` and waits at most `deadlineMs` for it to end, into `stats`. The sample keeps
 * being updated in the background if the fiber ends later, so a hang is reported with its real
 * length when known.
 *
 * @since 0.1.0
 * @category utils
 */
export const interruptMeasured = <A, E>(
  fiber: Fiber.Fiber<A, E>,
  stats: RunStats,
  deadlineMs: number
): Effect.Effect<Sample> => Effect.orDie(interruptReported(fiber, reportTo(stats), deadlineMs))

/**
 * Runs `effect` on a daemon fiber that nobody interrupts and waits at most `deadlineMs` for it;
 * without a result by then it is a collateral failure (and the fiber is interrupted in the background).
 *
 * @since 0.1.0
 * @category utils
 */
export const probe = <A, E>(
  effect: Effect.Effect<A, E>,
  stats: RunStats,
  deadlineMs: number,
  what: string
): Effect.Effect<void> => Effect.orDie(probeReported(effect, reportTo(stats), deadlineMs, what))

/** The observer's reads as promises: the bodies read the server through pg-warden's promise-based `Observer`. */
const serverReads = (observer: Observer): Interruptions.ServerReads => {
  const promise = <A>(effect: Effect.Effect<A, CliError>) =>
    Effect.runPromise(Effect.either(effect)).then((result) =>
      Either.isRight(result) ? result.right : Promise.reject(result.left)
    )
  return {
    backends: (app) => promise(observer.backends(app)),
    waitForBackends: (app, predicate, timeoutMs) => promise(observer.waitFor(app, predicate, timeoutMs))
  }
}

/**
 * Runs a scenario's body on `sql` with `ctx`, its reports accumulated into `ctx.stats` (or given to
 * `reporter`).
 *
 * @since 0.1.0
 * @category runners
 */
export const runBody = (
  sql: SqlClient.SqlClient,
  ctx: ScenarioContext,
  body: (run: Run) => Effect.Effect<void, ScenarioFailure>,
  reporter: Interruptions.Reporter = reportTo(ctx.stats)
): Effect.Effect<void, CliError> =>
  body({ sql, server: serverReads(ctx.observer), app: ctx.app, deadlines: ctx.deadlines, reporter }).pipe(
    Effect.mapError((error) => new CliError({ kind: "server", message: error.message }))
  )

/**
 * A scenario as the demo runs it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Scenario {
  readonly id: string
  readonly title: string
  readonly description: string
  /** Pool size for both contenders. */
  readonly connections: number
  /** How long the run is expected to take on a well-behaved contender (for the progress bar). */
  readonly plannedMs: number
  /** The hard limit on the scenario's body; past it the run is abandoned and that is reported. */
  readonly limitMs: number
  readonly run: (sql: SqlClient.SqlClient, ctx: ScenarioContext) => Effect.Effect<void, CliError>
}

/**
 * The demo's three scenarios, scaled to a total duration (about `totalMs` for both contenders).
 *
 * @since 0.1.0
 * @category scenarios
 */
export const demoScenarios = (totalMs: number, deadlines: Deadlines = defaultDeadlines): Array<Scenario> => {
  const scale = Math.min(3, Math.max(0.15, totalMs / 60_000))
  const reproBudget = Math.round(10_000 * scale)
  const iterations = Math.max(1, Math.round(Interruptions.asyncpgRepro.iterations * scale))
  const reproRun: Interruptions.ReproScenario = { ...Interruptions.asyncpgRepro, iterations }
  const stormRun: Interruptions.StormScenario = {
    ...Interruptions.storm,
    durationMs: Math.max(1_000, Math.round(Interruptions.storm.durationMs * scale))
  }
  const busy = Interruptions.saturation
  const perIteration = reproRun.interruptAfterMs + deadlines.settleMs + 100
  const worstIteration = reproRun.interruptAfterMs + deadlines.interruptMs + deadlines.settleMs + deadlines.probeMs
  return [
    {
      id: reproRun.id,
      title: reproRun.title,
      description: `pool of ${reproRun.connections}: a transaction runs ${reproRun.transaction[0]}, then ${reproRun.interrupts}, interrupted after ${reproRun.interruptAfterMs / 1000} s; then a statement nobody interrupts (${iterations}×)`,
      connections: reproRun.connections,
      plannedMs: iterations * perIteration,
      limitMs: reproBudget + worstIteration + 5_000,
      run: (sql, ctx) => runBody(sql, ctx, (run) => repro(run, reproRun, reproBudget))
    },
    {
      id: stormRun.id,
      title: stormRun.title,
      description: `pool of ${stormRun.connections}, ${stormRun.workers} fibers running short transactions and statements for ${(stormRun.durationMs / 1000).toFixed(0)} s, ${Math.round(stormRun.victimRate * 100)} % interrupted at random moments`,
      connections: stormRun.connections,
      plannedMs: stormRun.durationMs + deadlines.settleMs + 200,
      limitMs: stormRun.durationMs + deadlines.interruptMs + deadlines.probeMs * 2 + deadlines.settleMs + 5_000,
      run: (sql, ctx) => runBody(sql, ctx, (run) => storm(run, stormRun))
    },
    {
      id: busy.id,
      title: busy.title,
      description: `pool of ${busy.connections} busy with ${busy.interrupts}, ${busy.waiters} more fibers waiting; all ${busy.connections + busy.waiters} interrupted at once`,
      connections: busy.connections,
      plannedMs: 800 + deadlines.settleMs,
      limitMs:
        busy.busyWithinMs + busy.queueMs + deadlines.interruptMs + deadlines.settleMs + deadlines.probeMs + 5_000,
      run: (sql, ctx) =>
        runBody(sql, ctx, (run) => saturation(run, busy), {
          ...reportTo(ctx.stats),
          ready: (view) => {
            if (!Interruptions.allRunning(view)) {
              ctx.stats.notes.push(
                `the server showed ${view.running.length} of ${view.expected} ${view.fragment} running`
              )
            }
          }
        })
    }
  ]
}

/**
 * The outcome of one contender on one scenario.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunResult {
  readonly contender: Contender
  readonly scenario: Scenario
  readonly app: string
  readonly stats: RunStats
  /** How long closing the layer took; `undefined` when it did not finish within the deadline. */
  readonly closeMs: number | undefined
  /** What the server still showed for the run's `application_name` after the layer was closed. */
  readonly left: StateCounts
  /** Backends the demo terminated afterwards (so the next run starts clean). */
  readonly terminated: number
  readonly wallMs: number
}

/**
 * A fresh `application_name` for a run.
 *
 * @since 0.1.0
 * @category utils
 */
export const runApplicationName = (prefix: string, contender: Contender, scenario: { readonly id: string }) =>
  `${prefix}-${contender.id}-${scenario.id}-${randomBytes(3).toString("hex")}`.slice(0, 63)

/** How long closing a layer may take before it is reported as hung. */
const CLOSE_DEADLINE_MS = 3_000

/**
 * Runs one scenario against one contender: builds the layer in its own scope, runs the scenario on a
 * daemon fiber within its time limit, closes the layer within a deadline, reads what the server still
 * shows, and terminates any leftovers so the next run starts clean. Never waits without a deadline.
 *
 * @since 0.1.0
 * @category runners
 */
export const runScenario = (options: {
  readonly url: string
  readonly contender: Contender
  readonly scenario: Scenario
  readonly observer: Observer
  readonly app: string
  readonly stats: RunStats
  readonly deadlines: Deadlines
}): Effect.Effect<RunResult, CliError> => {
  const { contender, scenario, observer, app, stats } = options
  const started = now()
  return Effect.gen(function* () {
    const scope = yield* Scope.make()
    const built = yield* Effect.forkDaemon(
      Layer.buildWithScope(contender.layer(options.url, app, scenario.connections), scope)
    )
    const env = yield* Fiber.await(built).pipe(Effect.timeoutOption(15_000))
    if (Option.isNone(env) || Exit.isFailure(env.value)) {
      stats.notes.push(
        Option.isNone(env)
          ? "the layer did not build within 15 s"
          : `the layer failed to build: ${describeExit(env.value)}`
      )
    } else {
      const sql = Context.get(env.value.value, SqlClient.SqlClient)
      const body = yield* Effect.forkDaemon(scenario.run(sql, { observer, app, stats, deadlines: options.deadlines }))
      const exit = yield* Fiber.await(body).pipe(Effect.timeoutOption(scenario.limitMs))
      if (Option.isNone(exit)) {
        stats.notes.push(`the scenario did not finish within its ${Math.round(scenario.limitMs / 1000)} s limit`)
        yield* Fiber.interruptFork(body)
      } else if (Exit.isFailure(exit.value)) {
        stats.notes.push(`the scenario stopped: ${describeExit(exit.value)}`)
      }
    }
    const closeStarted = now()
    const closer = yield* Effect.forkDaemon(Scope.close(scope, Exit.void))
    const closed = yield* Fiber.await(closer).pipe(Effect.timeoutOption(CLOSE_DEADLINE_MS))
    const closeMs = Option.isSome(closed) ? now() - closeStarted : undefined
    const after = yield* observer.waitFor(app, (bs) => bs.length === 0, 1_000)
    const left = countStates(after.backends)
    const terminated = left.total > 0 ? yield* observer.terminateAll(app) : 0
    if (left.total > 0) yield* observer.waitFor(app, (bs) => bs.length === 0, 3_000)
    return { contender, scenario, app, stats, closeMs, left, terminated, wallMs: now() - started }
  }).pipe(
    // Whatever happened (even an interrupted demo), nothing of this run stays on the server.
    Effect.onExit((exit) =>
      Exit.isSuccess(exit) ? Effect.void : Effect.ignore(Effect.timeout(observer.terminateAll(app), 3_000))
    )
  )
}
