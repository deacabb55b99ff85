/**
 * The scenarios the demo runs against each contender (and `check` reuses): the SQLAlchemy/asyncpg
 * reproduction, a random interruption storm and a saturated pool. Each one only uses the `SqlClient`
 * API, so both contenders run exactly the same code, and records what it measured in a
 * {@link RunStats}: interruption latencies, fibers that failed although nobody interrupted them, and
 * what the server showed afterwards.
 *
 * Every wait is bounded. Work that may hang is forked as a daemon fiber, so that a contender whose
 * interruption never completes cannot hold the demo: the hang is recorded, and the fiber is left to
 * end whenever it does (its backends are terminated by the runner).
 *
 * @since 0.1.0
 */
import { randomBytes } from "node:crypto"
import * as SqlClient from "@effect/sql/SqlClient"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as WardenClient from "pg-warden/WardenClient"
import * as WardenError from "pg-warden/WardenError"
import { type CliError, countStates, inTransaction, type Observer, runs, type StateCounts } from "./server.js"

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
export interface Sample {
  ms: number
  done: boolean
  /** Not ended within the deadline (even if it ended later). */
  hung: boolean
}

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
export interface Deadlines {
  /** An interrupted fiber that has not ended after this is counted as hung. */
  readonly interruptMs: number
  /** A statement nobody interrupts that has no result after this counts as a collateral failure. */
  readonly probeMs: number
  /** How long after the interruptions the server's view is read. */
  readonly settleMs: number
}

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

const describeError = (error: unknown): string => {
  if (typeof error !== "object" || error === null) return String(error)
  const e = error as { message?: unknown; cause?: unknown; _tag?: unknown }
  const message = typeof e.message === "string" && e.message !== "" ? e.message : String(e._tag ?? "error")
  const inner = (e.cause as { message?: unknown } | undefined)?.message
  const code = WardenError.sqlState(error)
  let out = message
  if (typeof inner === "string" && inner !== "" && !out.includes(inner)) out += `: ${inner}`
  if (code !== undefined && !out.includes(code)) out += ` (SQLSTATE ${code})`
  return out
}

/**
 * One line for how a fiber ended.
 *
 * @since 0.1.0
 * @category utils
 */
export const describeExit = <A, E>(exit: Exit.Exit<A, E>): string => {
  if (Exit.isSuccess(exit)) return "success"
  const failure = Cause.failureOption(exit.cause)
  if (Option.isSome(failure)) return describeError(failure.value)
  const defect = Cause.dieOption(exit.cause)
  if (Option.isSome(defect)) return `defect: ${describeError(defect.value)}`
  return Cause.isInterruptedOnly(exit.cause) ? "interrupted" : (Cause.pretty(exit.cause).split("\n")[0] ?? "failed")
}

const recordFailure = (stats: RunStats, message: string) => {
  stats.collateral++
  stats.failures.set(message, (stats.failures.get(message) ?? 0) + 1)
}

/**
 * Accounts for a fiber nobody interrupted: a success counts as done, anything else as collateral.
 *
 * @since 0.1.0
 * @category utils
 */
export const account = <A, E>(stats: RunStats, exit: Exit.Exit<A, E>): void => {
  if (Exit.isSuccess(exit)) stats.ok++
  else recordFailure(stats, describeExit(exit))
}

/**
 * Interrupts `fiber` and waits at most `deadlineMs` for it to end. The sample keeps being updated
 * in the background if the fiber ends later, so a hang is reported with its real length when known.
 *
 * @since 0.1.0
 * @category utils
 */
export const interruptMeasured = <A, E>(
  fiber: Fiber.RuntimeFiber<A, E>,
  stats: RunStats,
  deadlineMs: number
): Effect.Effect<Sample> =>
  Effect.gen(function* () {
    const started = now()
    const sample: Sample = { ms: 0, done: false, hung: false }
    stats.latencies.push(sample)
    stats.interrupted++
    yield* Fiber.interruptFork(fiber)
    yield* Effect.forkDaemon(
      Effect.map(Fiber.await(fiber), () => {
        sample.ms = now() - started
        sample.done = true
      })
    )
    const ended = yield* Fiber.await(fiber).pipe(Effect.timeoutOption(deadlineMs))
    if (Option.isNone(ended)) {
      sample.hung = true
      stats.hung++
      if (!sample.done) sample.ms = now() - started
    } else if (!sample.done) {
      sample.ms = now() - started
      sample.done = true
    }
    return sample
  })

/**
 * Runs `effect` on a daemon fiber that nobody interrupts and waits at most `deadlineMs` for it;
 * without a result by then it is a collateral failure (and the fiber is interrupted in the background).
 *
 * @since 0.1.0
 * @category utils
 */
export const probe = <A, E>(effect: Effect.Effect<A, E>, stats: RunStats, deadlineMs: number, what: string) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.forkDaemon(effect)
    const exit = yield* Fiber.await(fiber).pipe(Effect.timeoutOption(deadlineMs))
    if (Option.isSome(exit)) return account(stats, exit.value)
    recordFailure(stats, `${what}: no result within ${deadlineMs} ms`)
    yield* Fiber.interruptFork(fiber)
  })

/**
 * Reads the server's view of the run's backends and keeps the worst seen: backends still running a
 * statement containing `fragment`, and backends idle in transaction.
 *
 * @since 0.1.0
 * @category utils
 */
export const snapshotAfter = (ctx: ScenarioContext, fragment: string): Effect.Effect<void, CliError> =>
  Effect.map(ctx.observer.backends(ctx.app), (backends) => {
    ctx.stats.running = Math.max(ctx.stats.running, backends.filter(runs(fragment)).length)
    ctx.stats.idleInTx = Math.max(ctx.stats.idleInTx, backends.filter(inTransaction).length)
  })

const randomInt = (maxInclusive: number) => Math.floor(Math.random() * (maxInclusive + 1))

/**
 * The SQLAlchemy/asyncpg report, ported: on a pool of 1, a transaction runs `select 1` then
 * `pg_sleep(10)` and is interrupted after 1 s; then a statement nobody interrupts checks that the
 * pool still works. Repeated `iterations` times, or until `budgetMs` is used up.
 *
 * @since 0.1.0
 * @category scenarios
 */
export const repro = (
  sql: SqlClient.SqlClient,
  ctx: ScenarioContext,
  options: { readonly iterations: number; readonly budgetMs: number }
): Effect.Effect<void, CliError> =>
  Effect.gen(function* () {
    const { stats, deadlines } = ctx
    const started = now()
    for (let i = 0; i < options.iterations && (i === 0 || now() - started < options.budgetMs); i++) {
      const fiber = yield* Effect.forkDaemon(
        sql.withTransaction(Effect.zipRight(sql`select 1`, sql`select pg_sleep(10)`))
      )
      yield* Effect.sleep(1_000)
      const early = yield* Fiber.poll(fiber)
      if (Option.isSome(early)) account(stats, early.value)
      else yield* interruptMeasured(fiber, stats, deadlines.interruptMs)
      yield* Effect.sleep(deadlines.settleMs)
      yield* snapshotAfter(ctx, "pg_sleep(10)")
      yield* probe(sql`select 1`, stats, deadlines.probeMs, "the next statement")
    }
  })

/**
 * Options of {@link storm}.
 *
 * @since 0.1.0
 * @category models
 */
export interface StormOptions {
  readonly workers: number
  readonly durationMs: number
  /** The share of transactions that are interrupted (0–1). */
  readonly victimRate: number
  /** Victims are interrupted 0..maxDelayMs after they started. */
  readonly maxDelayMs: number
}

/**
 * A random interruption storm: `workers` fibers run, for `durationMs`, short transactions (`select 1`,
 * `pg_sleep(0.01)`, `select 1`) and single statements (`pg_sleep(0.01)`), half and half; a random
 * share of them is interrupted at a random moment (waiting for a connection, mid-statement, between
 * statements, in COMMIT). Everything else must succeed. Ends with a statement nobody interrupts.
 *
 * @since 0.1.0
 * @category scenarios
 */
export const storm = (
  sql: SqlClient.SqlClient,
  ctx: ScenarioContext,
  options: StormOptions
): Effect.Effect<void, CliError> =>
  Effect.gen(function* () {
    const { stats, deadlines } = ctx
    const end = now() + options.durationMs
    const transaction = sql.withTransaction(
      sql`select 1`.pipe(Effect.zipRight(sql`select pg_sleep(0.01)`), Effect.zipRight(sql`select 1`))
    )
    const statement = sql`select pg_sleep(0.01)`
    const worker = Effect.gen(function* () {
      while (now() < end) {
        const victim = Math.random() < options.victimRate
        const fiber = yield* Effect.forkDaemon(Math.random() < 0.5 ? transaction : statement)
        if (victim) {
          yield* Effect.sleep(randomInt(options.maxDelayMs))
          const early = yield* Fiber.poll(fiber)
          if (Option.isSome(early)) account(stats, early.value)
          else yield* interruptMeasured(fiber, stats, deadlines.interruptMs)
        } else {
          const exit = yield* Fiber.await(fiber).pipe(Effect.timeoutOption(deadlines.interruptMs + deadlines.probeMs))
          if (Option.isSome(exit)) account(stats, exit.value)
          else {
            recordFailure(stats, `a transaction: no result within ${deadlines.interruptMs + deadlines.probeMs} ms`)
            yield* Fiber.interruptFork(fiber)
          }
        }
      }
    })
    yield* Effect.all(
      Array.from({ length: options.workers }, () => worker),
      {
        concurrency: "unbounded",
        discard: true
      }
    )
    yield* Effect.sleep(deadlines.settleMs)
    yield* snapshotAfter(ctx, "pg_sleep")
    yield* probe(sql`select 1`, stats, deadlines.probeMs, "the next statement")
  })

/**
 * A saturated pool: every connection runs `pg_sleep(30)` and as many fibers again wait for a
 * connection; all of them are interrupted at once. Ends with a statement nobody interrupts.
 *
 * @since 0.1.0
 * @category scenarios
 */
export const saturation = (
  sql: SqlClient.SqlClient,
  ctx: ScenarioContext,
  options: { readonly connections: number }
): Effect.Effect<void, CliError> =>
  Effect.gen(function* () {
    const { stats, deadlines } = ctx
    const n = options.connections
    const sleepers = yield* Effect.forEach(Array.from({ length: n }), () => Effect.forkDaemon(sql`select pg_sleep(30)`))
    const seen = yield* ctx.observer.waitFor(ctx.app, (bs) => bs.filter(runs("pg_sleep(30)")).length >= n, 3_000)
    if (!seen.ok) {
      stats.notes.push(
        `the server showed ${seen.backends.filter(runs("pg_sleep(30)")).length} of ${n} pg_sleep(30) running`
      )
    }
    const waiters = yield* Effect.forEach(Array.from({ length: n }), () => Effect.forkDaemon(sql`select 1`))
    yield* Effect.sleep(200)
    const all = [...sleepers, ...waiters]
    const early = yield* Effect.forEach(all, (fiber) => Fiber.poll(fiber))
    yield* Effect.forEach(
      all,
      (fiber, i) => {
        const done = early[i]!
        return Option.isSome(done)
          ? Effect.sync(() => account(stats, done.value))
          : interruptMeasured(fiber, stats, deadlines.interruptMs)
      },
      { concurrency: "unbounded", discard: true }
    )
    yield* Effect.sleep(deadlines.settleMs)
    yield* snapshotAfter(ctx, "pg_sleep(30)")
    yield* probe(sql`select 1`, stats, deadlines.probeMs, "the next statement")
  })

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
  const stormMs = Math.max(1_000, Math.round(8_000 * scale))
  const iterations = Math.max(1, Math.round(5 * scale))
  const perIteration = 1_000 + deadlines.settleMs + 100
  const worstIteration = 1_000 + deadlines.interruptMs + deadlines.settleMs + deadlines.probeMs
  return [
    {
      id: "repro",
      title: "asyncpg repro",
      description: `pool of 1: a transaction runs select 1, then pg_sleep(10), interrupted after 1 s; then a statement nobody interrupts (${iterations}×)`,
      connections: 1,
      plannedMs: iterations * perIteration,
      limitMs: reproBudget + worstIteration + 5_000,
      run: (sql, ctx) => repro(sql, ctx, { iterations, budgetMs: reproBudget })
    },
    {
      id: "storm",
      title: "interruption storm",
      description: `pool of 4, 16 fibers running short transactions and statements for ${(stormMs / 1000).toFixed(0)} s, 30 % interrupted at random moments`,
      connections: 4,
      plannedMs: stormMs + deadlines.settleMs + 200,
      limitMs: stormMs + deadlines.interruptMs + deadlines.probeMs * 2 + deadlines.settleMs + 5_000,
      run: (sql, ctx) => storm(sql, ctx, { workers: 16, durationMs: stormMs, victimRate: 0.3, maxDelayMs: 30 })
    },
    {
      id: "saturation",
      title: "saturation",
      description: "pool of 4 busy with pg_sleep(30), 4 more fibers waiting; all 8 interrupted at once",
      connections: 4,
      plannedMs: 800 + deadlines.settleMs,
      limitMs: 3_000 + 200 + deadlines.interruptMs + deadlines.settleMs + deadlines.probeMs + 5_000,
      run: (sql, ctx) => saturation(sql, ctx, { connections: 4 })
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
