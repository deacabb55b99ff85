/**
 * The conformance suite of the Effect 4 edition, written once as data and run against two contenders:
 * `effect4/test/conformance.warden.test.ts` (pg-warden's Effect 4 edition, every case must pass) and
 * `effect4/test/conformance.sqlpg.test.ts` (`@effect/sql-pg` 4.0.5, with its observed failures).
 *
 * It is the Effect 3 suite (test/conformance/cases.ts) case for case, on effect 4's `SqlClient`, plus the
 * faults that make sense for any contender (a network blackhole, a frozen backend, a cancel sent by
 * someone else). The scenarios shared with the demo and `pg-warden check` (the asyncpg report,
 * saturation, the storm) are the same data (cli/src/interruptions.ts), run by their Effect 4 bodies
 * (../support/interruptions-effect4.ts), and judged with the Effect 3 suite's limits
 * (test/conformance/judging.ts: `STRICT`, `interruptionLimits`). The cases themselves are still a port
 * of the Effect 3 ones, with the same hooks and numbers; moving them to data plus Effect-free judging,
 * driven by a thin body per edition, is the next step.
 *
 * Rules for cases:
 * - only the `SqlClient` API (so both contenders run them);
 * - every layer is built in its own scope (`withContender`), and once that scope has closed the case asserts,
 *   from the server's side, that no backend with the case's `application_name` is left;
 * - the truth is the server's view (`pg_stat_activity` and table contents read by the admin connection),
 *   never only the client's bookkeeping;
 * - timing assertions are generous (2 shared cores) and waits are on conditions, not sleeps.
 *
 * `runCase` wraps a case with its fixtures (an admin connection, a unique `application_name`, a private schema)
 * and a hard time limit, so a contender that hangs fails instead of hanging CI.
 */
import { randomBytes } from "node:crypto"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import type { Connection } from "effect/sql/SqlConnection"
import * as Interruptions from "../../../cli/src/interruptions.js"
import { allRunning, type Deadlines, type Reporter } from "../../../cli/src/interruptions.js"
import { cleanupBoundMs } from "../../../src/core/config.js"
import { sqlState } from "../../../src/core/errors.js"
import { interruptionLimits, need, STRICT } from "../../../test/conformance/judging.js"
import { Admin, type Backend, uniqueAppName } from "../../../test/support/admin.js"
import { type FaultProxy, startProxy } from "../../../test/support/proxy.js"
import * as Bodies from "../support/interruptions-effect4.js"

const { interruptFork } = Bodies

// ---------------------------------------------------------------------------------------------------------------
// Model

export interface LayerOptions {
  readonly maxConnections: number
  /** How long a statement may wait for a pool slot. A contender without such an option may ignore it. */
  readonly acquireTimeoutMs?: number
  /** Connect here instead of the case's server URL (a fault proxy in front of it). */
  readonly url?: string
}

/** What a contender provides. Cases only use `SqlClient`. */
export type ContenderLayer = Layer.Layer<SqlClient.SqlClient, unknown>

export interface CaseContext {
  readonly url: string
  readonly admin: Admin
  /** The `application_name` of every connection the contender opens in this case (unique per case and run). */
  readonly app: string
  /** A schema created for this case (and dropped after it): put tables and functions here. */
  readonly schema: string
  /** A fresh layer of the contender, connecting as `app`. */
  readonly layer: (options: LayerOptions) => ContenderLayer
}

export interface Case {
  readonly id: string
  /** "C1".."C8", several separated by "/". */
  readonly contract: string
  readonly title: string
  readonly run: (ctx: CaseContext) => Effect.Effect<void, unknown>
}

export interface Contender {
  /** Short, used in application names. */
  readonly name: string
  readonly layer: (url: string, app: string, options: LayerOptions) => ContenderLayer
}

/** A conformance assertion that did not hold (the message says what the server or the client showed). */
export class CaseFailure extends Data.TaggedError("CaseFailure")<{ readonly message: string }> {}

/** Hard limit for one case, including its fixtures. */
export const CASE_TIME_LIMIT_MS = 25_000

/** How long, after a layer's scope closed, its backends may take to disappear from `pg_stat_activity`. */
const NO_BACKENDS_WITHIN_MS = 5_000

/**
 * The fault cases' limit on one interruption: pg-warden's `cleanupBound` with its default deadlines (4.5 s, computed
 * by the core as `WardenClient.cleanupBound({})` computes it), plus the slack the Effect 3 fault tests allow for
 * scheduling and the server's own work (1.5 s). Every contender is held to it: it is the bound the contract promises.
 */
export const FAULT_BOUND_MS = cleanupBoundMs({}) + 1_500

// ---------------------------------------------------------------------------------------------------------------
// Helpers

const fail = (message: string) => Effect.fail(new CaseFailure({ message }))

const check = (condition: boolean, message: string): Effect.Effect<void, CaseFailure> =>
  condition ? Effect.void : fail(message)

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error))

/** Runs an admin (or other promise-based) step; a rejection is a `CaseFailure` with its message. */
const io = <A>(f: () => Promise<A>): Effect.Effect<A, CaseFailure> =>
  Effect.tryPromise({ try: f, catch: (error) => new CaseFailure({ message: messageOf(error) }) })

const now = Effect.sync(() => performance.now())

const within =
  (ms: number, what: string) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | CaseFailure, R> =>
    Effect.timeoutOrElse(self, {
      duration: Duration.millis(ms),
      orElse: () => fail(`${what}: not done within ${ms} ms`)
    })

const randomInt = (maxInclusive: number) => Math.floor(Math.random() * (maxInclusive + 1))

const inTransaction = (b: Backend) => b.state?.startsWith("idle in transaction") === true
const running = (fragment: string) => (b: Backend) => b.state === "active" && b.query.includes(fragment)
const describeBackends = (backends: ReadonlyArray<Backend>) =>
  JSON.stringify(backends.map((b) => ({ pid: b.pid, state: b.state, query: b.query.slice(0, 60) })))

const backends = (ctx: CaseContext) => io(() => ctx.admin.backends(ctx.app))

/** Waits until the app's backends satisfy `predicate` (polling the server); fails with `message` otherwise. */
const waitForBackends = (
  ctx: CaseContext,
  predicate: (backends: ReadonlyArray<Backend>) => boolean,
  timeoutMs: number,
  message: string
) =>
  io(() =>
    ctx.admin.waitFor(() => ctx.admin.backends(ctx.app), predicate, {
      timeoutMs: Math.max(1, timeoutMs),
      intervalMs: 20,
      message
    })
  )

const waitRunning = (ctx: CaseContext, fragment: string, count = 1, timeoutMs = 5_000) =>
  waitForBackends(
    ctx,
    (bs) => bs.filter(running(fragment)).length >= count,
    timeoutMs,
    `server never showed ${count} backend(s) running ${fragment}`
  )

const waitNotRunning = (ctx: CaseContext, fragment: string, timeoutMs: number, what: string) =>
  waitForBackends(
    ctx,
    (bs) => !bs.some(running(fragment)),
    timeoutMs,
    `${what}: ${fragment} still running on the server`
  )

const waitNoneInTransaction = (ctx: CaseContext, timeoutMs: number, what: string) =>
  waitForBackends(ctx, (bs) => !bs.some(inTransaction), timeoutMs, `${what}: a backend is still idle in transaction`)

const count = (ctx: CaseContext, table: string, where = "true") =>
  io(() => ctx.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${ctx.schema}.${table} WHERE ${where}`)).pipe(
    Effect.map((rows) => rows[0]?.n ?? 0)
  )

const ddl = (ctx: CaseContext, statements: string) => io(() => ctx.admin.query(statements))

/**
 * Interrupts `fiber` without waiting for it, then waits at most `ms` for it to end.
 * Returns its exit and how long the interruption took.
 */
const interruptWithin = <A, E>(fiber: Fiber.Fiber<A, E>, ms: number, what: string) =>
  Effect.gen(function* () {
    const started = yield* now
    yield* interruptFork(fiber)
    const exit = yield* Fiber.await(fiber).pipe(within(ms, `${what}: interruption`))
    return { exit, elapsed: (yield* now) - started }
  })

/** An exit that is a success or an interruption only (no failure, no defect). */
const successOrInterrupted = <A, E>(exit: Exit.Exit<A, E>) =>
  Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause)

const describeError = Bodies.describeError

const describeExit = <A, E>(exit: Exit.Exit<A, E>): string => {
  if (Exit.isSuccess(exit)) return "success"
  const failure = exit.cause.reasons.find(Cause.isFailReason)
  if (failure !== undefined) return `failure ${describeError(failure.error)}`
  const defect = exit.cause.reasons.find(Cause.isDieReason)
  if (defect !== undefined) return `defect ${describeError(defect.defect)}`
  return Cause.hasInterruptsOnly(exit.cause) ? "interrupted" : (Cause.pretty(exit.cause).split("\n")[0] ?? "failed")
}

/** The typed failure of an exit that failed without a defect, if it did. */
const typedFailure = <A, E>(exit: Exit.Exit<A, E>): E | undefined => {
  if (Exit.isSuccess(exit) || exit.cause.reasons.some(Cause.isDieReason)) return undefined
  return exit.cause.reasons.find(Cause.isFailReason)?.error
}

const tagOf = (error: unknown): unknown => (error as { _tag?: unknown } | undefined)?._tag

/**
 * Builds the contender's layer in its own scope, runs `use` with its `SqlClient`, closes the scope, then
 * asserts from the server that nothing is left under the case's `application_name`.
 */
const withContender = <E>(
  ctx: CaseContext,
  options: LayerOptions,
  use: (sql: SqlClient.SqlClient) => Effect.Effect<void, E>
): Effect.Effect<void, unknown> =>
  Effect.gen(function* () {
    yield* Effect.scoped(
      Effect.flatMap(Layer.build(ctx.layer(options)), (env) => use(Context.get(env, SqlClient.SqlClient)))
    )
    yield* noBackendsLeft(ctx)
  })

const noBackendsLeft = (ctx: CaseContext) =>
  waitForBackends(
    ctx,
    (bs) => bs.length === 0,
    NO_BACKENDS_WITHIN_MS,
    `backends left on the server ${NO_BACKENDS_WITHIN_MS} ms after the layer's scope closed`
  ).pipe(Effect.asVoid)

/** Host and port of the server behind `url`, for a fault proxy in front of it. */
const proxyTarget = (url: string): { readonly host: string; readonly port: number } => {
  const parsed = new URL(url)
  return {
    host: parsed.hostname === "" ? "127.0.0.1" : parsed.hostname,
    port: parsed.port === "" ? 5432 : Number(parsed.port)
  }
}

/** A fault proxy in front of the case's server, closed (every socket destroyed) with the scope. */
const faultProxy = (ctx: CaseContext): Effect.Effect<FaultProxy, CaseFailure, Scope.Scope> =>
  Effect.acquireRelease(
    io(() => startProxy(proxyTarget(ctx.url))),
    (proxy) => Effect.promise(() => proxy.close())
  )

/**
 * The interruption scenarios the demo shows are defined once (cli/src/interruptions.ts) and run here by their
 * Effect 4 body; the case judges what the body reports, with the limits of the Effect 3 suite.
 */
/** Runs a shared scenario's body; what stopped it is the case's failure. */
const scenario = (
  ctx: CaseContext,
  sql: SqlClient.SqlClient,
  body: (run: Bodies.Run) => Effect.Effect<void, Bodies.ScenarioFailure>,
  reporter: Reporter,
  deadlines: Deadlines = STRICT
): Effect.Effect<void, CaseFailure> =>
  Effect.mapError(
    body({ sql, server: ctx.admin, app: ctx.app, deadlines, reporter }),
    (error) => new CaseFailure({ message: error.message })
  )

// ---------------------------------------------------------------------------------------------------------------
// Cases

/**
 * 1. The asyncpg/SQLAlchemy report (the demo's "asyncpg repro", `Interruptions.asyncpgRepro`): an interrupted
 * transaction must not poison the next one.
 */
const asyncpgReproduction: Case = {
  id: "asyncpg-repro",
  contract: "C1/C3",
  title: "interrupted transaction on a pool of 1, five times: fast, clean, never more than 1 backend",
  run: (ctx) =>
    withContender(ctx, { maxConnections: Interruptions.asyncpgRepro.connections }, (sql) =>
      Effect.gen(function* () {
        // Background sampler of the server's view. `watching` is true only while no transaction may be open
        // (from the end of an interruption to the next fork); `window` counts the changes. A sample counts as
        // dirty only if the whole round trip fell inside one watching window (the server took its snapshot then).
        const seen = { max: 0, dirty: [] as Array<string>, watching: false, window: 0 }
        const setWatching = (watching: boolean) => {
          seen.watching = watching
          seen.window++
        }
        const sampler = yield* Effect.forkChild(
          Effect.suspend(() => {
            const watching = seen.watching
            const window = seen.window
            return Effect.map(backends(ctx), (bs) => {
              seen.max = Math.max(seen.max, bs.length)
              if (watching && window === seen.window && bs.some(inTransaction)) seen.dirty.push(describeBackends(bs))
            })
          }).pipe(Effect.repeat(Schedule.spaced(Duration.millis(10))))
        )
        let iteration = 0
        const where = () => `iteration ${iteration}: `
        const limits = interruptionLimits(where)
        yield* scenario(ctx, sql, (run) => Bodies.repro(run, Interruptions.asyncpgRepro), {
          ...limits,
          iteration: (i) => {
            iteration = i
            setWatching(false)
          },
          ready: (view) => {
            const ms = view.firstStatementMs
            need(
              ms !== undefined && ms < 1_000,
              `${where()}the first statement ${ms === undefined ? "had not completed" : `took ${Math.round(ms)} ms to complete`} (limit 1000 ms)`
            )
            need(
              allRunning(view),
              `${where()}when the interruption was due the server did not show ${view.fragment} running: ${describeBackends(view.backends)}`
            )
          },
          interrupted: (interruption) => {
            limits.interrupted(interruption)
            setWatching(true)
          },
          after: (view) =>
            need(
              view.inTransaction.length === 0,
              `${where()}right after the interruption the server shows ${describeBackends(view.backends)}`
            )
        })
        yield* Fiber.interrupt(sampler)
        const pool = Interruptions.asyncpgRepro.connections
        yield* check(seen.max <= pool, `the server showed ${seen.max} backends for a pool of ${pool}`)
        yield* check(
          seen.dirty.length === 0,
          `the server showed a backend idle in transaction after an interruption: ${seen.dirty[0]}`
        )
      })
    )
}

/** 2. Mid-statement interruption, by each way Effect interrupts. */
const midStatement: Case = {
  id: "mid-statement",
  contract: "C2/C3",
  title:
    "pg_sleep(10) stops on the server promptly when interrupted by Fiber.interrupt, timeout, race, scope close, and a timeout on a connection that stays reserved",
  run: (ctx) =>
    withContender(ctx, { maxConnections: 2 }, (sql) =>
      Effect.gen(function* () {
        const statement = sql`select pg_sleep(10)`
        const TIMER_MS = 1_500
        const stopsOnServer = (what: string, since: number, budgetMs: number) =>
          Effect.flatMap(now, (t) => waitNotRunning(ctx, "pg_sleep(10)", budgetMs - (t - since), what))

        // Fiber.interrupt
        {
          const fiber = yield* Effect.forkChild(statement)
          yield* waitRunning(ctx, "pg_sleep(10)")
          const started = yield* now
          const { elapsed } = yield* interruptWithin(fiber, 3_000, "Fiber.interrupt")
          yield* check(elapsed < 3_000, `Fiber.interrupt took ${Math.round(elapsed)} ms`)
          yield* stopsOnServer("Fiber.interrupt", started, 2_000)
        }
        // Effect.timeout
        {
          const started = yield* now
          const fiber = yield* Effect.forkChild(Effect.timeout(statement, Duration.millis(TIMER_MS)))
          yield* waitRunning(ctx, "pg_sleep(10)")
          const exit = yield* Fiber.await(fiber).pipe(within(TIMER_MS + 3_000, "Effect.timeout"))
          const elapsed = (yield* now) - started - TIMER_MS
          yield* check(
            Exit.isFailure(exit) && Cause.isTimeoutError(typedFailure(exit)),
            `Effect.timeout: expected a TimeoutError, got ${describeExit(exit)}`
          )
          yield* check(elapsed < 3_000, `Effect.timeout: the interruption took ${Math.round(elapsed)} ms`)
          yield* stopsOnServer("Effect.timeout", started + TIMER_MS, 2_000)
        }
        // Effect.race with a faster effect
        {
          const started = yield* now
          const fiber = yield* Effect.forkChild(
            Effect.race(Effect.as(statement, "statement"), Effect.as(Effect.sleep(Duration.millis(TIMER_MS)), "timer"))
          )
          yield* waitRunning(ctx, "pg_sleep(10)")
          const exit = yield* Fiber.await(fiber).pipe(within(TIMER_MS + 3_000, "Effect.race"))
          const elapsed = (yield* now) - started - TIMER_MS
          yield* check(
            Exit.isSuccess(exit) && exit.value === "timer",
            `Effect.race: expected the timer to win, got ${describeExit(exit)}`
          )
          yield* check(elapsed < 3_000, `Effect.race: the interruption took ${Math.round(elapsed)} ms`)
          yield* stopsOnServer("Effect.race", started + TIMER_MS, 2_000)
        }
        // Closing a parent scope
        {
          const scope = yield* Scope.make()
          yield* Effect.forkIn(statement, scope)
          yield* waitRunning(ctx, "pg_sleep(10)")
          const started = yield* now
          yield* Scope.close(scope, Exit.void).pipe(within(3_000, "Scope.close"))
          const elapsed = (yield* now) - started
          yield* check(elapsed < 3_000, `Scope.close took ${Math.round(elapsed)} ms`)
          yield* stopsOnServer("Scope.close", started, 2_000)
        }
        // Effect.timeout on a reserved connection that stays reserved: no scope closes, so only the statement's own
        // interruption can stop it; the connection must be usable again at once.
        yield* Effect.scoped(
          Effect.gen(function* () {
            const connection = yield* sql.reserve
            const started = yield* now
            const fiber = yield* Effect.forkChild(
              Effect.timeout(connection.execute("select pg_sleep(10)", [], undefined), Duration.millis(TIMER_MS))
            )
            yield* waitRunning(ctx, "pg_sleep(10)")
            const exit = yield* Fiber.await(fiber).pipe(within(TIMER_MS + 3_000, "Effect.timeout on sql.reserve"))
            const elapsed = (yield* now) - started - TIMER_MS
            yield* check(
              Exit.isFailure(exit) && Cause.isTimeoutError(typedFailure(exit)),
              `Effect.timeout on sql.reserve: expected a TimeoutError, got ${describeExit(exit)}`
            )
            yield* check(
              elapsed < 3_000,
              `Effect.timeout on sql.reserve: the interruption took ${Math.round(elapsed)} ms`
            )
            yield* stopsOnServer("Effect.timeout on sql.reserve", started + TIMER_MS, 2_000)
            yield* connection
              .execute("select 1", [], undefined)
              .pipe(within(1_000, "the reserved connection's next statement after the timeout"))
          })
        )
        // The pool still works.
        yield* sql`select 1`.pipe(within(1_000, "a statement after the interruptions"))
      })
    )
}

/** 3. A waiter interrupted while waiting for the only connection, racing the hand-off, must not lose the slot. */
const interruptedWaiter: Case = {
  id: "interrupted-waiter",
  contract: "C5",
  title: "20 waiters interrupted around the hand-off (statement, withTransaction, reserve) never lose the pool slot",
  run: (ctx) =>
    withContender(ctx, { maxConnections: 1 }, (sql) =>
      Effect.gen(function* () {
        const selectOne = (connection: Connection) => connection.execute("select 1", [], undefined)
        for (let i = 0; i < 20; i++) {
          const what = `iteration ${i + 1}`
          const acquired = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          const hold = Effect.andThen(Deferred.succeed(acquired, undefined), Deferred.await(release))
          const holder = yield* Effect.forkChild(
            i % 2 === 0
              ? sql.withTransaction(Effect.andThen(sql`select 1`, hold))
              : Effect.scoped(Effect.flatMap(sql.reserve, (c) => Effect.andThen(selectOne(c), hold)))
          )
          yield* Deferred.await(acquired).pipe(within(5_000, `${what}: holder acquiring`))
          const waiting =
            i % 3 === 0
              ? Effect.asVoid(sql`select 1`)
              : i % 3 === 1
                ? Effect.asVoid(sql.withTransaction(sql`select 1`))
                : Effect.scoped(Effect.asVoid(Effect.flatMap(sql.reserve, selectOne)))
          const waiter = yield* Effect.forkChild(waiting)
          if (i < 6) {
            // The waiter is surely queued (no server-side signal exists for that), then interrupted, then the
            // holder lets go.
            yield* Effect.sleep(Duration.millis(30))
            yield* interruptFork(waiter)
            yield* Deferred.succeed(release, undefined)
          } else {
            // Race the hand-off: release and interruption at random times within 0–10 ms of each other.
            yield* Effect.forkChild(
              Effect.andThen(Effect.sleep(Duration.millis(randomInt(10))), Deferred.succeed(release, undefined))
            )
            yield* Effect.sleep(Duration.millis(randomInt(10)))
            yield* interruptFork(waiter)
          }
          const holderExit = yield* Fiber.await(holder).pipe(within(3_000, `${what}: holder finishing`))
          yield* check(Exit.isSuccess(holderExit), `${what}: the holder failed: ${describeExit(holderExit)}`)
          const waiterExit = yield* Fiber.await(waiter).pipe(within(3_000, `${what}: interrupted waiter ending`))
          yield* check(
            successOrInterrupted(waiterExit),
            `${what}: the interrupted waiter ended with ${describeExit(waiterExit)}`
          )
          yield* sql`select 1`.pipe(within(1_000, `${what}: a new statement after the interrupted waiter (lost slot?)`))
        }
      })
    )
}

/** 4. Interrupted between statements of a transaction: rolled back, nothing idle in transaction. */
const betweenStatements: Case = {
  id: "between-statements",
  contract: "C3",
  title: "interrupted between statements in a transaction: the row is not there, no backend idle in transaction",
  run: (ctx) =>
    Effect.gen(function* () {
      yield* ddl(ctx, `CREATE TABLE ${ctx.schema}.t (id int)`)
      yield* withContender(ctx, { maxConnections: 1 }, (sql) =>
        Effect.gen(function* () {
          const inserted = yield* Deferred.make<void>()
          const fiber = yield* Effect.forkChild(
            sql.withTransaction(
              sql
                .unsafe(`INSERT INTO ${ctx.schema}.t VALUES (1)`)
                .pipe(Effect.andThen(Deferred.succeed(inserted, undefined)), Effect.andThen(Effect.never))
            )
          )
          yield* Deferred.await(inserted).pipe(within(5_000, "insert"))
          yield* waitForBackends(ctx, (bs) => bs.some(inTransaction), 5_000, "transaction never seen open")
          const { elapsed } = yield* interruptWithin(fiber, 3_000, "between statements")
          yield* check(elapsed < 3_000, `interruption took ${Math.round(elapsed)} ms`)
          yield* waitNoneInTransaction(ctx, 2_000, "after the interruption")
          const rows = yield* count(ctx, "t")
          yield* check(rows === 0, `the interrupted transaction's row is visible (${rows} rows)`)
          yield* sql`select 1`.pipe(within(1_000, "a statement after the interruption"))
        })
      )
      const rows = yield* count(ctx, "t")
      yield* check(rows === 0, `after the layer closed the interrupted transaction's row is there (${rows} rows)`)
    })
}

/** 5. Interrupted while COMMIT runs (a deferred constraint trigger sleeps in it). */
const duringCommit: Case = {
  id: "during-commit",
  contract: "C3",
  title: "interrupted during a slow COMMIT: bounded, all-or-nothing, no backend left running COMMIT",
  run: (ctx) =>
    Effect.gen(function* () {
      yield* ddl(
        ctx,
        `CREATE TABLE ${ctx.schema}.t (id int);
         CREATE FUNCTION ${ctx.schema}.slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.id = 1 THEN PERFORM pg_sleep(5); END IF; RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON ${ctx.schema}.t
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ${ctx.schema}.slow_commit();`
      )
      yield* withContender(ctx, { maxConnections: 1 }, (sql) =>
        Effect.gen(function* () {
          const fiber = yield* Effect.forkChild(
            sql.withTransaction(sql.unsafe(`INSERT INTO ${ctx.schema}.t VALUES (1), (2), (3)`))
          )
          yield* waitForBackends(
            ctx,
            (bs) => bs.some((b) => b.state === "active" && b.query.trim().toUpperCase() === "COMMIT"),
            5_000,
            "server never showed COMMIT active"
          )
          const { elapsed } = yield* interruptWithin(fiber, 3_000, "during COMMIT")
          yield* check(elapsed < 3_000, `interruption took ${Math.round(elapsed)} ms`)
          yield* waitForBackends(
            ctx,
            (bs) => !bs.some((b) => b.state === "active" && b.query.trim().toUpperCase() === "COMMIT"),
            2_000,
            "a backend is still running COMMIT after the interruption"
          )
          yield* waitNoneInTransaction(ctx, 2_000, "after the interruption")
          const rows = yield* count(ctx, "t")
          yield* check(rows === 0 || rows === 3, `the transaction is half there: ${rows} of 3 rows`)
          yield* sql`select 1`.pipe(within(1_000, "a statement after the interruption"))
        })
      )
      const rows = yield* count(ctx, "t")
      yield* check(rows === 0 || rows === 3, `after the layer closed the transaction is half there: ${rows} of 3 rows`)
    })
}

/** 6. Closing the layer while a daemon fiber (outside the layer's scope) is inside a transaction. */
const shutdownWithDaemon: Case = {
  id: "shutdown-daemon",
  contract: "C1",
  title: "layer closed while a daemon fiber's transaction waits: it never commits, no backend remains",
  run: (ctx) =>
    Effect.gen(function* () {
      yield* ddl(ctx, `CREATE TABLE ${ctx.schema}.t (id int)`)
      const scope = yield* Scope.make()
      const gate = yield* Deferred.make<void>()
      const firstInserted = yield* Deferred.make<void>()
      yield* Effect.gen(function* () {
        const env = yield* Layer.buildWithScope(ctx.layer({ maxConnections: 2 }), scope)
        const sql = Context.get(env, SqlClient.SqlClient)
        const insert = (id: number) => sql.unsafe(`INSERT INTO ${ctx.schema}.t VALUES (${id})`)
        const daemon = yield* Effect.forkDetach(
          sql.withTransaction(
            insert(1).pipe(
              Effect.andThen(Deferred.succeed(firstInserted, undefined)),
              Effect.andThen(Deferred.await(gate)),
              Effect.andThen(insert(2))
            )
          )
        )
        yield* Effect.gen(function* () {
          yield* Deferred.await(firstInserted).pipe(within(5_000, "first insert"))
          // Closing is forked so that a close that waits for the daemon is measured, not waited for: closing the
          // scope is uninterruptible, and the daemon only goes on once the gate opens after it.
          const closing = yield* Effect.forkDetach(Scope.close(scope, Exit.void))
          yield* Fiber.await(closing).pipe(
            within(5_000, "closing the layer's scope while the daemon's transaction is open")
          )
          yield* Deferred.succeed(gate, undefined)
          const exit = yield* Fiber.await(daemon).pipe(within(5_000, "the daemon fiber ending after the gate opened"))
          yield* check(
            Exit.isFailure(exit),
            "the daemon's transaction succeeded (committed) after the layer's scope had closed"
          )
          yield* noBackendsLeft(ctx)
          const rows = yield* count(ctx, "t")
          yield* check(rows === 0, `the daemon's transaction committed after the layer closed: ${rows} rows`)
        }).pipe(Effect.ensuring(interruptFork(daemon)))
      }).pipe(Effect.ensuring(Effect.andThen(Deferred.succeed(gate, undefined), Scope.close(scope, Exit.void))))
    })
}

/**
 * 7. Many fibers, many transactions, half of them interrupted at random. Three rounds: one round interrupts few
 * fibers mid-statement by chance, three make the outcome reliable.
 */
const interruptionStorm: Case = {
  id: "interruption-storm",
  contract: "C3/C4",
  title: "3 rounds of 32 fibers x 5 transactions on a pool of 4, half interrupted at random: atomic, no collateral",
  run: (ctx) =>
    Effect.gen(function* () {
      yield* ddl(ctx, `CREATE TABLE ${ctx.schema}.t (tx int, n int)`)
      const ROUNDS = 3
      const FIBERS = 32
      const TX_PER_FIBER = 5
      yield* withContender(ctx, { maxConnections: 4 }, (sql) =>
        Effect.gen(function* () {
          const insert = (tx: number, n: number) => sql.unsafe(`INSERT INTO ${ctx.schema}.t VALUES (${tx}, ${n})`)
          for (let round = 1; round <= ROUNDS; round++) {
            const what = `round ${round}`
            const fiberKey = (i: number) => round * 1_000 + i
            const victims = new Set(
              Array.from({ length: FIBERS }, (_, i) => i)
                .sort(() => Math.random() - 0.5)
                .slice(0, FIBERS / 2)
            )
            const started = yield* Effect.all(Array.from({ length: FIBERS }, () => Deferred.make<void>()))
            const begin = yield* now
            const fibers = yield* Effect.forEach(
              Array.from({ length: FIBERS }, (_, i) => i),
              (i) =>
                Effect.forkChild(
                  Effect.forEach(
                    Array.from({ length: TX_PER_FIBER }, (_, j) => fiberKey(i) * 100 + j),
                    (tx) =>
                      sql.withTransaction(
                        insert(tx, 1).pipe(
                          Effect.andThen(Deferred.succeed(started[i]!, undefined)),
                          Effect.andThen(sql`select pg_sleep(0.005)`),
                          Effect.andThen(insert(tx, 2))
                        )
                      ),
                    { discard: true }
                  )
                )
            )
            // Each victim is interrupted 0–20 ms after its first transaction got going.
            yield* Effect.forEach(
              [...victims],
              (i) =>
                Effect.forkChild(
                  Deferred.await(started[i]!).pipe(
                    Effect.andThen(Effect.sleep(Duration.millis(randomInt(20)))),
                    Effect.andThen(interruptFork(fibers[i]!))
                  )
                ),
              { discard: true }
            )
            const exits = yield* Effect.forEach(fibers, (fiber) => Fiber.await(fiber)).pipe(
              within(5_000, `${what}: the storm (all fibers ending)`)
            )
            const elapsed = (yield* now) - begin
            const collateral = exits.flatMap((exit, i) =>
              victims.has(i) || Exit.isSuccess(exit) ? [] : [`fiber ${i}: ${describeExit(exit)}`]
            )
            yield* check(
              collateral.length === 0,
              `${what}: ${collateral.length} fibers nobody interrupted failed, e.g. ${collateral[0]}`
            )
            const victimFailures = exits.flatMap((exit, i) =>
              victims.has(i) && !successOrInterrupted(exit) ? [`fiber ${i}: ${describeExit(exit)}`] : []
            )
            yield* check(
              victimFailures.length === 0,
              `${what}: ${victimFailures.length} interrupted fibers failed instead of being interrupted, e.g. ${victimFailures[0]}`
            )
            yield* waitNoneInTransaction(ctx, 2_000, `${what}: after the storm`)
            const broken = yield* io(() =>
              ctx.admin.query<{ tx: number; n: number }>(
                `SELECT tx, count(*)::int AS n FROM ${ctx.schema}.t GROUP BY tx HAVING count(*) <> 2 ORDER BY tx`
              )
            )
            yield* check(
              broken.length === 0,
              `${what}: non-atomic transactions (tx, rows): ${JSON.stringify(broken.slice(0, 5))}`
            )
            const survivors = [...Array(FIBERS).keys()].filter((i) => !victims.has(i)).map(fiberKey)
            const committed = yield* count(ctx, "t", `tx / 100 IN (${survivors.join(",")})`)
            yield* check(
              committed === survivors.length * TX_PER_FIBER * 2,
              `${what}: uninterrupted fibers should have committed ${survivors.length * TX_PER_FIBER * 2} rows, found ${committed}`
            )
            yield* check(elapsed < 5_000, `${what}: the storm took ${Math.round(elapsed)} ms`)
          }
        })
      )
    })
}

/**
 * 8. A saturated pool (the demo's "saturation", `Interruptions.saturation`): every connection runs a long statement
 * and as many fibers again wait for one; interrupting all of them stops all of them.
 */
const saturation: Case = {
  id: "saturation",
  contract: "C2",
  title: "pool of 4 saturated by pg_sleep(30), 4 more waiting: interrupting all 8 stops all on the server within 2 s",
  run: (ctx) =>
    withContender(ctx, { maxConnections: Interruptions.saturation.connections }, (sql) =>
      scenario(
        ctx,
        sql,
        (run) => Bodies.saturation(run, Interruptions.saturation),
        {
          ...interruptionLimits(() => ""),
          ready: (view) =>
            need(
              allRunning(view),
              `server never showed ${view.expected} backend(s) running ${view.fragment}: ${describeBackends(view.backends)}`
            ),
          stopped: (view) =>
            need(
              view.ok,
              `${Math.round(view.ms)} ms after interrupting all: ${view.fragment} still running on the server: ${describeBackends(view.running)}`
            ),
          after: (view) =>
            need(
              view.running.length === 0 && view.inTransaction.length === 0,
              `after the interruptions the server shows ${describeBackends(view.backends)}`
            )
        },
        { ...STRICT, stoppedWithinMs: 2_000 }
      )
    )
}

/** 9. A COMMIT the server rejects (deferred unique constraint) is a typed failure. */
const failedCommit: Case = {
  id: "failed-commit",
  contract: "C6",
  title: "COMMIT failing on a deferred constraint fails withTransaction with a typed SqlError, not a defect",
  run: (ctx) =>
    Effect.gen(function* () {
      yield* ddl(
        ctx,
        `CREATE TABLE ${ctx.schema}.t (id int, CONSTRAINT t_id_unique UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)`
      )
      yield* withContender(ctx, { maxConnections: 1 }, (sql) =>
        Effect.gen(function* () {
          const exit = yield* sql
            .withTransaction(sql.unsafe(`INSERT INTO ${ctx.schema}.t VALUES (1), (1)`))
            .pipe(Effect.exit, within(5_000, "the transaction"))
          yield* check(Exit.isFailure(exit), "withTransaction succeeded although COMMIT failed")
          const error = typedFailure(exit)
          yield* check(
            error !== undefined,
            `withTransaction died instead of failing with a typed error: ${describeExit(exit)}`
          )
          yield* check(tagOf(error) === "SqlError", `expected an SqlError, got ${describeExit(exit)}`)
          const rows = yield* count(ctx, "t")
          yield* check(rows === 0, `the failed transaction's rows are there (${rows})`)
          yield* waitNoneInTransaction(ctx, 2_000, "after the failed COMMIT")
          yield* sql`select 1`.pipe(within(1_000, "a statement after the failed COMMIT"))
        })
      )
    })
}

/** 10. The server answers COMMIT with ROLLBACK because a statement failed (and the body swallowed the error). */
const commitRolledBack: Case = {
  id: "commit-rolled-back",
  contract: "C6",
  title: "a COMMIT the server turns into ROLLBACK fails withTransaction with a typed SqlError",
  run: (ctx) =>
    Effect.gen(function* () {
      yield* ddl(ctx, `CREATE TABLE ${ctx.schema}.t (id int)`)
      yield* withContender(ctx, { maxConnections: 1 }, (sql) =>
        Effect.gen(function* () {
          const exit = yield* sql
            .withTransaction(
              sql
                .unsafe(`INSERT INTO ${ctx.schema}.t VALUES (1)`)
                .pipe(Effect.andThen(Effect.ignore(sql`select 1/0`)), Effect.as("body succeeded"))
            )
            .pipe(Effect.exit, within(5_000, "the transaction"))
          yield* check(
            Exit.isFailure(exit),
            "withTransaction succeeded silently although the server answered COMMIT with ROLLBACK"
          )
          const error = typedFailure(exit)
          yield* check(error !== undefined, `withTransaction died: ${describeExit(exit)}`)
          yield* check(tagOf(error) === "SqlError", `expected an SqlError, got ${describeExit(exit)}`)
          const rows = yield* count(ctx, "t")
          yield* check(rows === 0, `the rolled-back transaction's row is there (${rows})`)
          yield* sql`select 1`.pipe(within(1_000, "a statement after the rolled-back COMMIT"))
        })
      )
    })
}

/** 11. A raw BEGIN on a reserved connection, left open when the reservation's scope closes. */
const rawBeginOnReserve: Case = {
  id: "raw-begin-reserve",
  contract: "C3",
  title: "raw BEGIN + insert on sql.reserve, scope closed without COMMIT: rolled back, no dirty reuse",
  run: (ctx) =>
    Effect.gen(function* () {
      yield* ddl(ctx, `CREATE TABLE ${ctx.schema}.t (id int)`)
      yield* withContender(ctx, { maxConnections: 1 }, (sql) =>
        Effect.gen(function* () {
          yield* Effect.scoped(
            Effect.gen(function* () {
              const connection = yield* sql.reserve
              yield* connection.execute("BEGIN", [], undefined)
              yield* connection.execute(`INSERT INTO ${ctx.schema}.t VALUES (1)`, [], undefined)
            })
          ).pipe(within(5_000, "the reserved connection's work"))
          yield* waitNoneInTransaction(ctx, 2_000, "after the reservation's scope closed")
          // The next borrower gets the (only) connection: its autocommit insert must really commit, i.e. not run
          // inside the abandoned transaction.
          yield* sql.unsafe(`INSERT INTO ${ctx.schema}.t VALUES (2)`).pipe(within(1_000, "the next borrower's insert"))
          const afterNext = yield* backends(ctx)
          yield* check(
            !afterNext.some(inTransaction),
            `after the next borrower's statement the server shows ${describeBackends(afterNext)}`
          )
          const first = yield* count(ctx, "t", "id = 2")
          yield* check(
            first === 1,
            "the next borrower's autocommit insert is not visible: it ran inside the open BEGIN"
          )
        })
      )
      const abandoned = yield* count(ctx, "t", "id = 1")
      const next = yield* count(ctx, "t", "id = 2")
      yield* check(abandoned === 0, "the insert after the raw BEGIN was committed")
      yield* check(next === 1, "the next borrower's autocommit insert was lost")
    })
}

/** 12. Waiting for a connection longer than the acquire timeout fails with a typed error. */
const acquireTimeout: Case = {
  id: "acquire-timeout",
  contract: "C5",
  title: "pool of 1 held: a statement fails with a typed SqlError after the acquire timeout (300 ms)",
  run: (ctx) =>
    withContender(ctx, { maxConnections: 1, acquireTimeoutMs: 300 }, (sql) =>
      Effect.gen(function* () {
        const acquired = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const holder = yield* Effect.forkChild(
          Effect.scoped(
            Effect.flatMap(sql.reserve, () =>
              Effect.andThen(Deferred.succeed(acquired, undefined), Deferred.await(release))
            )
          )
        )
        yield* Deferred.await(acquired).pipe(within(5_000, "holder acquiring"))
        const started = yield* now
        const result = yield* sql`select 1`.pipe(Effect.exit, Effect.timeoutOption(Duration.millis(3_000)))
        const elapsed = (yield* now) - started
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holder).pipe(within(3_000, "holder finishing"))
        if (result._tag === "None") {
          return yield* fail("a statement waiting for a held pool of 1 neither failed nor succeeded within 3 s")
        }
        const exit = result.value
        yield* check(Exit.isFailure(exit), "the statement succeeded although the only connection was held")
        yield* check(tagOf(typedFailure(exit)) === "SqlError", `expected a typed SqlError, got ${describeExit(exit)}`)
        yield* check(elapsed >= 250, `the acquire timeout fired after ${Math.round(elapsed)} ms (configured 300 ms)`)
        yield* sql`select 1`.pipe(within(1_000, "a statement after the acquire timeout"))
      })
    )
}

/**
 * 13. The network to the server goes silent (a blackhole: nothing passes, no socket closes) while a transaction is
 * open and idle. Interrupting it must still end within the bound, and once traffic flows again the server must end
 * the transaction without committing it.
 */
const blackholeTransaction: Case = {
  id: "blackhole-transaction",
  contract: "C2/C3",
  title: `network blackhole with a transaction idle: interrupting it ends within cleanupBound + 1.5 s (${FAULT_BOUND_MS} ms), nothing commits, the server ends the transaction`,
  run: (ctx) =>
    Effect.scoped(
      Effect.gen(function* () {
        yield* ddl(ctx, `CREATE TABLE ${ctx.schema}.t (id int)`)
        const proxy = yield* faultProxy(ctx)
        yield* withContender(ctx, { maxConnections: 1, url: proxy.rewrite(ctx.url) }, (sql) =>
          Effect.gen(function* () {
            const inserted = yield* Deferred.make<void>()
            const fiber = yield* Effect.forkChild(
              sql.withTransaction(
                sql
                  .unsafe(`INSERT INTO ${ctx.schema}.t VALUES (1)`)
                  .pipe(Effect.andThen(Deferred.succeed(inserted, undefined)), Effect.andThen(Effect.never))
              )
            )
            yield* Deferred.await(inserted).pipe(within(5_000, "insert"))
            yield* waitForBackends(ctx, (bs) => bs.some(inTransaction), 5_000, "transaction never seen open")

            proxy.setMode("blackhole")
            const { elapsed, exit } = yield* interruptWithin(fiber, FAULT_BOUND_MS, "under the blackhole")
            yield* check(elapsed < FAULT_BOUND_MS, `interruption took ${Math.round(elapsed)} ms`)
            yield* check(
              successOrInterrupted(exit),
              `the interrupted fiber ended with ${describeExit(exit)} instead of being interrupted`
            )

            proxy.setMode("pass")
            yield* waitNoneInTransaction(ctx, 10_000, "10 s after traffic flowed again")
            const rows = yield* count(ctx, "t")
            yield* check(rows === 0, `the interrupted transaction's row is visible (${rows} rows)`)
            yield* sql`select 1`.pipe(within(3_000, "a statement after the blackhole"))
          }).pipe(
            // After a failure the contender may still wait for an answer that the blackhole swallowed: cut its
            // sockets so that its layer can close. Either way, traffic flows again before the layer closes.
            Effect.onError(() => Effect.sync(() => proxy.reset())),
            Effect.ensuring(Effect.sync(() => proxy.setMode("pass")))
          )
        )
        const rows = yield* count(ctx, "t")
        yield* check(rows === 0, `after the layer closed the interrupted transaction's row is there (${rows} rows)`)
      })
    )
}

/**
 * 14. The backend stops answering (SIGSTOP: alive, its socket open, silent) while a transaction's statement runs.
 * Interrupting must end within the bound, as an interruption (not a defect), and the backend must end.
 */
const frozenBackend: Case = {
  id: "frozen-backend",
  contract: "C2/C3/C6",
  title: `backend frozen (SIGSTOP) in a transaction's pg_sleep(10): interruption within ${FAULT_BOUND_MS} ms ends interrupted (no defect), the backend ends`,
  run: (ctx) =>
    withContender(ctx, { maxConnections: 1 }, (sql) => {
      let frozen: number | undefined
      const thaw = Effect.sync(() => {
        if (frozen === undefined) return
        try {
          ctx.admin.thaw(frozen)
        } catch {
          // already gone
        }
        frozen = undefined
      })
      return Effect.gen(function* () {
        const fiber = yield* Effect.forkChild(
          sql.withTransaction(Effect.andThen(sql`select 1`, sql`select pg_sleep(10)`))
        )
        const busy = yield* waitRunning(ctx, "pg_sleep(10)")
        const pid = busy.find(running("pg_sleep(10)"))!.pid
        frozen = pid
        ctx.admin.freeze(pid)

        const { elapsed, exit } = yield* interruptWithin(fiber, FAULT_BOUND_MS, "with the backend frozen")
        yield* check(elapsed < FAULT_BOUND_MS, `interruption took ${Math.round(elapsed)} ms`)
        yield* check(
          Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause),
          `the interrupted fiber ended with ${describeExit(exit)}, not as interrupted`
        )

        yield* thaw
        yield* waitForBackends(
          ctx,
          (bs) => !bs.some((b) => b.pid === pid),
          5_000,
          `the frozen backend ${pid} is still there 5 s after it was thawed`
        )
        yield* sql`select 1`.pipe(within(3_000, "a statement after the frozen backend"))
      }).pipe(Effect.ensuring(thaw))
    })
}

/**
 * 15. Someone else cancels the statement (`pg_cancel_backend` from another session: an operator, a watchdog). The
 * statement fails with SQLSTATE 57014 "due to user request", which is not a statement timeout: retrying it is not
 * known to be safe, so it must not be a retryable `StatementTimeoutError`.
 */
const cancelledByOther: Case = {
  id: "cancelled-by-other",
  contract: "C6",
  title:
    "a statement cancelled by pg_cancel_backend from another session is a typed, non-retryable SqlError (not StatementTimeoutError)",
  run: (ctx) =>
    withContender(ctx, { maxConnections: 1 }, (sql) =>
      Effect.gen(function* () {
        const fiber = yield* Effect.forkChild(Effect.exit(sql`select pg_sleep(10)`))
        const busy = yield* waitRunning(ctx, "pg_sleep(10)")
        const pid = busy.find(running("pg_sleep(10)"))!.pid
        yield* io(() => ctx.admin.query("SELECT pg_cancel_backend($1)", [pid]))
        const exit = yield* Fiber.join(fiber).pipe(within(5_000, "the cancelled statement ending"))
        yield* check(Exit.isFailure(exit), "the statement succeeded although it was cancelled")
        const error = typedFailure(exit) as
          | { readonly _tag?: unknown; readonly reason?: { readonly _tag?: unknown }; readonly isRetryable?: unknown }
          | undefined
        yield* check(tagOf(error) === "SqlError", `expected a typed SqlError, got ${describeExit(exit)}`)
        yield* check(sqlState(error) === "57014", `expected SQLSTATE 57014, got ${describeExit(exit)}`)
        yield* check(
          error?.reason?._tag !== "StatementTimeoutError",
          `a cancel at someone's request is classified as a StatementTimeoutError: ${describeExit(exit)}`
        )
        yield* check(error?.isRetryable !== true, `a cancel at someone's request is retryable: ${describeExit(exit)}`)
        yield* sql`select 1`.pipe(within(1_000, "a statement after the cancelled one"))
      })
    )
}

/**
 * 16. The shared random interruption storm (`Interruptions.storm`, the one `pg-warden check` and the demo run),
 * shortened to 3 s: interruptions are bounded, nothing nobody interrupted fails, and the server shows nothing
 * running or idle in transaction afterwards. Judged with `STRICT`, the server read 300 ms after the storm (as
 * `pg-warden check` reads it: a terminated backend may take a moment to leave `pg_stat_activity`).
 */
const sharedStorm: Case = {
  id: "shared-storm",
  contract: "C2/C4",
  title:
    "the shared interruption storm for 3 s (16 fibers, pool of 4, 30 % interrupted): bounded, no collateral, clean",
  run: (ctx) =>
    withContender(ctx, { maxConnections: Interruptions.storm.connections }, (sql) => {
      let interrupted = 0
      const limits = interruptionLimits(() => "")
      return Effect.gen(function* () {
        yield* scenario(
          ctx,
          sql,
          (run) => Bodies.storm(run, { ...Interruptions.storm, durationMs: 3_000 }),
          {
            ...limits,
            // A victim may finish before its interruption is due; it must not have failed.
            endedBefore: (ending) =>
              need(ending._tag !== "Failure", `a fiber failed before it was interrupted: ${ending.description}`),
            interrupted: (interruption) => {
              limits.interrupted(interruption)
              need(
                interruption.ending?._tag !== "Failure",
                `an interrupted fiber failed instead of being interrupted: ${interruption.ending?.description}`
              )
              interrupted++
            },
            after: (view) =>
              need(
                view.running.length === 0 && view.inTransaction.length === 0,
                `after the storm the server shows ${describeBackends(view.backends)}`
              )
          },
          { ...STRICT, settleMs: 300 }
        )
        yield* check(interrupted > 0, "the storm interrupted nothing")
      })
    })
}

export const cases: ReadonlyArray<Case> = [
  asyncpgReproduction,
  midStatement,
  interruptedWaiter,
  betweenStatements,
  duringCommit,
  shutdownWithDaemon,
  interruptionStorm,
  saturation,
  failedCommit,
  commitRolledBack,
  rawBeginOnReserve,
  acquireTimeout,
  blackholeTransaction,
  frozenBackend,
  cancelledByOther,
  sharedStorm
]

// ---------------------------------------------------------------------------------------------------------------
// Runner

export const testName = (testCase: Case) => `${testCase.id} [${testCase.contract}] ${testCase.title}`

/**
 * Runs one case against `contender`: its own admin connection, `application_name` and schema; a hard time limit
 * (see `withTimeLimit`: even a contender that cannot be interrupted does not hold the test); afterwards,
 * whatever the outcome, leftover backends of the case are thawed and terminated and the schema is dropped, so one
 * case's leaks do not spill into the next.
 */
export const runCase = (testCase: Case, contender: Contender, url: string): Effect.Effect<void, unknown> =>
  Effect.acquireUseRelease(
    io(() => Admin.connect(url)),
    (admin) => {
      const app = uniqueAppName(`e4-${contender.name}-${testCase.id}`)
      const schema = `conformance_${randomBytes(6).toString("hex")}`
      const ctx: CaseContext = {
        url,
        admin,
        app,
        schema,
        layer: (options) => contender.layer(options.url ?? url, app, options)
      }
      return io(() => admin.query(`CREATE SCHEMA ${schema}`)).pipe(
        Effect.andThen(withTimeLimit(testCase.run(ctx), testCase.id)),
        Effect.ensuring(cleanUp(admin, app, schema))
      )
    },
    (admin) => Effect.promise(() => admin.close())
  )

/**
 * Runs `self` on a detached fiber and returns its outcome as soon as `self` itself has ended, without waiting for
 * the fibers it forked (they are children of the detached fiber, interrupted when it ends, and a contender may make
 * that take forever), and at the latest after `CASE_TIME_LIMIT_MS`. The fiber is then interrupted in the background.
 */
const withTimeLimit = <E>(self: Effect.Effect<void, E>, id: string): Effect.Effect<void, E | CaseFailure> =>
  Effect.gen(function* () {
    const outcome = yield* Deferred.make<void, E>()
    const fiber = yield* Effect.forkDetach(Effect.flatMap(Effect.exit(self), (exit) => Deferred.done(outcome, exit)))
    return yield* Deferred.await(outcome).pipe(
      Effect.timeoutOrElse({
        duration: Duration.millis(CASE_TIME_LIMIT_MS),
        orElse: () => fail(`${id}: case time limit of ${CASE_TIME_LIMIT_MS} ms exceeded`)
      }),
      Effect.ensuring(interruptFork(fiber))
    )
  })

const cleanUp = (admin: Admin, app: string, schema: string): Effect.Effect<void> =>
  Effect.promise(async () => {
    try {
      // A backend a case froze and could not thaw would never act on the terminate.
      for (const backend of await admin.backends(app)) {
        try {
          admin.thaw(backend.pid)
        } catch {
          // gone, or not ours to signal
        }
      }
      await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`,
        [app]
      )
      await admin.waitForNoBackends(app, 10_000).catch(() => undefined)
      await admin.query(`SET lock_timeout = '5s'`)
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
    } catch {
      // Best effort: never hide the case's own outcome.
    }
  })
