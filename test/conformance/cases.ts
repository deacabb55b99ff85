/**
 * The conformance suite, written once and run against every contender of every edition: pg-warden and
 * `@effect/sql-pg` 0.53 (test/conformance.*.test.ts, Effect 3), pg-warden's Effect 4 edition and `@effect/sql-pg` 4
 * (effect4/test/conformance.*.test.ts). pg-warden must pass every case; each baseline's failures are recorded as
 * expected failures with what the runs showed.
 *
 * The cases know no Effect: a fiber's work is a `Program` (contender.ts) that each edition's interpreter runs on its
 * own `SqlClient`, and the truth is the server's view read from a separate admin connection. Rules for cases:
 * - only what every `SqlClient` offers (statements, `withTransaction`, `reserve`), so every contender runs them;
 * - every layer is built in its own scope (`withContender`); once that scope has closed, the case asserts from the
 *   server that no backend with the case's `application_name` is left;
 * - timing assertions are generous (2 shared cores) and waits are on conditions, not sleeps.
 *
 * `runCase` wraps a case with its fixtures (an admin connection, a unique `application_name`, a private schema),
 * a hard time limit, so that a contender that hangs fails instead of hanging CI, and a clean-up.
 */
import { randomBytes } from "node:crypto"
import Pg from "pg"
import * as Interruptions from "../../cli/src/interruptions.js"
import { allRunning, type Deadlines, type Reporter } from "../../cli/src/interruptions.js"
import { cleanupBoundMs } from "../../src/core/config.js"
import { sqlState } from "../../src/core/errors.js"
import { Admin, type Backend, uniqueAppName } from "../support/admin.js"
import { type FaultProxy, startProxy } from "../support/proxy.js"
import {
  type Client,
  type Contender,
  call,
  describeOutcome,
  type Handle,
  ignoreFailure,
  type LayerOptions,
  never,
  type Outcome,
  type Program,
  raceTimer,
  reserve,
  type Scenario,
  sql,
  timeout,
  transaction,
  wait
} from "./contender.js"
import { interruptionLimits, need, STRICT } from "./judging.js"

// ---------------------------------------------------------------------------------------------------------------
// Model

export interface CaseContext {
  readonly url: string
  readonly admin: Admin
  /** The `application_name` of every connection the contender opens in this case (unique per case and run). */
  readonly app: string
  /** A schema created for this case (and dropped after it): put tables and functions here. */
  readonly schema: string
  /** Builds a fresh layer of the contender, connecting as `app`. */
  readonly open: (options: LayerOptions) => Promise<Client>
  /**
   * Set when `url` is PgBouncer in transaction mode (`admin` then reads the server itself): PgBouncer keeps the
   * server connections it pooled, so "nothing left" means no backend of the case busy or in a transaction and no
   * PgBouncer client of the case.
   */
  readonly bouncer?: { readonly adminUrl: string } | undefined
}

/** Where a case runs through PgBouncer: the server itself (for the admin connection) and PgBouncer's console. */
export interface ThroughBouncer {
  readonly serverUrl: string
  readonly adminUrl: string
}

export interface Case {
  readonly id: string
  /** "C1".."C7", several separated by "/". */
  readonly contract: string
  readonly title: string
  readonly run: (ctx: CaseContext) => Promise<void>
}

/** A conformance assertion that did not hold (the message says what the server or the client showed). */
export class CaseFailure extends Error {
  override readonly name = "CaseFailure"
}

/** Hard limit for one case, including its fixtures. */
export const CASE_TIME_LIMIT_MS = 25_000

/** How long, after a layer's scope closed, its backends may take to disappear from `pg_stat_activity`. */
const NO_BACKENDS_WITHIN_MS = 5_000

/**
 * The fault cases' limit on one interruption: pg-warden's `cleanupBound` with its default deadlines (computed by
 * the core, as `WardenClient.cleanupBound({})` computes it), plus 1.5 s for scheduling and the server's own work.
 * Every contender is held to it: it is the bound the contract promises.
 */
export const FAULT_BOUND_MS = cleanupBoundMs({}) + 1_500

// ---------------------------------------------------------------------------------------------------------------
// Helpers

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new CaseFailure(message)
}

const now = () => performance.now()

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** `promise`, or a `CaseFailure` saying `what` was not done within `ms`. */
const within = <A>(ms: number, what: string, promise: Promise<A>): Promise<A> => {
  let timer: ReturnType<typeof setTimeout> | undefined
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new CaseFailure(`${what}: not done within ${ms} ms`)), ms)
  })
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer))
}

/** A promise with its `resolve` (the cases' signals and gates). */
const latch = () => {
  let resolve!: () => void
  const promise = new Promise<void>((r) => {
    resolve = r
  })
  return { promise, resolve }
}

const randomInt = (maxInclusive: number) => Math.floor(Math.random() * (maxInclusive + 1))

const inTransaction = (b: Backend) => b.state?.startsWith("idle in transaction") === true
const running = (fragment: string) => (b: Backend) => b.state === "active" && b.query.includes(fragment)
const runningCommit = (b: Backend) => b.state === "active" && b.query.trim().toUpperCase() === "COMMIT"
const describeBackends = (backends: ReadonlyArray<Backend>) =>
  JSON.stringify(backends.map((b) => ({ pid: b.pid, state: b.state, query: b.query.slice(0, 60) })))

/** Waits until the app's backends satisfy `predicate` (polling the server); fails with `message` otherwise. */
const waitForBackends = (
  ctx: CaseContext,
  predicate: (backends: ReadonlyArray<Backend>) => boolean,
  timeoutMs: number,
  message: string
): Promise<ReadonlyArray<Backend>> =>
  ctx.admin
    .waitFor(() => ctx.admin.backends(ctx.app), predicate, {
      timeoutMs: Math.max(1, timeoutMs),
      intervalMs: 20,
      message
    })
    .catch((error: unknown) => {
      throw new CaseFailure(error instanceof Error ? error.message : String(error))
    })

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

const count = async (ctx: CaseContext, table: string, where = "true"): Promise<number> => {
  const rows = await ctx.admin.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${ctx.schema}.${table} WHERE ${where}`
  )
  return rows[0]?.n ?? 0
}

const ddl = async (ctx: CaseContext, statements: string): Promise<void> => {
  await ctx.admin.query(statements)
}

/** Interrupts without waiting, then waits at most `ms` for the fiber to end: its outcome and how long it took. */
const interruptWithin = async (handle: Handle, ms: number, what: string) => {
  const started = now()
  handle.interrupt()
  const outcome = await within(ms, `${what}: interruption`, handle.outcome)
  return { outcome, elapsed: now() - started }
}

/** A fiber's outcome within `ms`. */
const ended = (handle: Handle, ms: number, what: string) => within(ms, what, handle.outcome)

/** Runs `program` to its end, within `ms`. */
const runWithin = (client: Client, program: Program, ms: number, what: string) => ended(client.start(program), ms, what)

/** Runs `program` within `ms` and requires it to succeed. */
const succeeds = async (client: Client, program: Program, ms: number, what: string): Promise<void> => {
  const outcome = await runWithin(client, program, ms, what)
  check(outcome._tag === "Success", `${what}: ${describeOutcome(outcome)}`)
}

/** A statement answers within 1 s: the pool still works. */
const stillWorks = (client: Client, what: string, ms = 1_000) => succeeds(client, [sql("select 1")], ms, what)

const successOrInterrupted = (outcome: Outcome) => outcome._tag === "Success" || outcome._tag === "Interrupted"

const tagOf = (error: unknown): unknown => (error as { _tag?: unknown } | undefined)?._tag

/**
 * Builds the contender's layer in its own scope, runs `use` with it, closes the scope, then asserts from the
 * server that nothing is left under the case's `application_name`.
 */
const withContender = async (
  ctx: CaseContext,
  options: LayerOptions,
  use: (client: Client) => Promise<void>
): Promise<void> => {
  const client = await ctx.open(options)
  try {
    await use(client)
  } finally {
    await client.close()
  }
  await noBackendsLeft(ctx)
}

const noBackendsLeft = async (ctx: CaseContext): Promise<void> => {
  const bouncer = ctx.bouncer
  if (bouncer === undefined) {
    await waitForBackends(
      ctx,
      (bs) => bs.length === 0,
      NO_BACKENDS_WITHIN_MS,
      `backends left on the server ${NO_BACKENDS_WITHIN_MS} ms after the layer's scope closed`
    )
    return
  }
  await waitForBackends(
    ctx,
    (bs) => bs.every((b) => b.state === "idle"),
    NO_BACKENDS_WITHIN_MS,
    `backends busy or in a transaction ${NO_BACKENDS_WITHIN_MS} ms after the layer's scope closed`
  )
  const clients = await bouncerClients(bouncer.adminUrl, ctx.app, NO_BACKENDS_WITHIN_MS)
  check(
    clients.length === 0,
    `PgBouncer still has clients of the case after its scope closed: ${JSON.stringify(clients)}`
  )
}

/**
 * PgBouncer's clients named `app` (its `SHOW CLIENTS`), once none is left or `timeoutMs` has passed. PgBouncer's
 * console takes only the simple query protocol.
 */
export const bouncerClients = async (
  adminUrl: string,
  app: string,
  timeoutMs: number
): Promise<ReadonlyArray<{ readonly state: string }>> => {
  const deadline = now() + timeoutMs
  for (;;) {
    const rows = (await simpleQuery(adminUrl, "SHOW CLIENTS")) as ReadonlyArray<{
      readonly state: string
      readonly application_name: string
    }>
    const mine = rows.filter((row) => row.application_name === app).map((row) => ({ state: row.state }))
    if (mine.length === 0 || now() > deadline) return mine
    await sleep(50)
  }
}

/** One simple-protocol statement on a connection of its own (PgBouncer's console has no extended protocol). */
const simpleQuery = async (url: string, text: string): Promise<ReadonlyArray<Record<string, unknown>>> => {
  const client = new Pg.Client({ connectionString: url, application_name: "pg-warden-tests-bouncer-admin" })
  client.on("error", () => {})
  await client.connect()
  try {
    const result = await client.query(text)
    return result.rows
  } finally {
    await client.end().catch(() => undefined)
  }
}

/** Host and port of the server behind `url`, for a fault proxy in front of it. */
const proxyTarget = (url: string): { readonly host: string; readonly port: number } => {
  const parsed = new URL(url)
  return {
    host: parsed.hostname === "" ? "127.0.0.1" : parsed.hostname,
    port: parsed.port === "" ? 5432 : Number(parsed.port)
  }
}

/**
 * The interruption scenarios the demo and `pg-warden check` show are defined once (cli/src/interruptions.ts) and
 * run here by each edition's body; the case judges what the body reports, with the limits of judging.ts (the
 * demo's are its own: it reports, it never stops).
 */
const scenario = (
  ctx: CaseContext,
  client: Client,
  which: Scenario,
  reporter: Reporter,
  deadlines: Deadlines = STRICT
): Promise<void> =>
  client.scenario(which, { server: ctx.admin, app: ctx.app, deadlines, reporter }).catch((error: unknown) => {
    throw new CaseFailure(error instanceof Error ? error.message : String(error))
  })

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
    withContender(ctx, { maxConnections: Interruptions.asyncpgRepro.connections }, async (client) => {
      // Background sampler of the server's view. `watching` is true only while no transaction may be open (from
      // the end of an interruption to the next fork); `window` counts the changes. A sample counts as dirty only
      // if the whole round trip fell inside one watching window (the server took its snapshot then).
      const seen = { max: 0, dirty: [] as Array<string>, watching: false, window: 0 }
      const setWatching = (watching: boolean) => {
        seen.watching = watching
        seen.window++
      }
      let sampling = true
      const sampler = (async () => {
        while (sampling) {
          const watching = seen.watching
          const window = seen.window
          const bs = await ctx.admin.backends(ctx.app)
          seen.max = Math.max(seen.max, bs.length)
          if (watching && window === seen.window && bs.some(inTransaction)) seen.dirty.push(describeBackends(bs))
          await sleep(10)
        }
      })()
      let iteration = 0
      const where = () => `iteration ${iteration}: `
      const limits = interruptionLimits(where)
      try {
        await scenario(
          ctx,
          client,
          { _tag: "Repro", scenario: Interruptions.asyncpgRepro },
          {
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
          }
        )
      } finally {
        sampling = false
        await sampler
      }
      const pool = Interruptions.asyncpgRepro.connections
      check(seen.max <= pool, `the server showed ${seen.max} backends for a pool of ${pool}`)
      check(
        seen.dirty.length === 0,
        `the server showed a backend idle in transaction after an interruption: ${seen.dirty[0]}`
      )
    })
}

/** 2. Mid-statement interruption, by each way Effect interrupts. */
const midStatement: Case = {
  id: "mid-statement",
  contract: "C2/C3",
  title: "pg_sleep(10) stops on the server promptly when interrupted by Fiber.interrupt, timeout, race, scope close",
  run: (ctx) =>
    withContender(ctx, { maxConnections: 2 }, async (client) => {
      const statement = sql("select pg_sleep(10)")
      const TIMER_MS = 1_500
      const stopsOnServer = (what: string, since: number, budgetMs: number) =>
        waitNotRunning(ctx, "pg_sleep(10)", budgetMs - (now() - since), what)

      // Fiber.interrupt
      {
        const fiber = client.start([statement])
        await waitRunning(ctx, "pg_sleep(10)")
        const started = now()
        const { elapsed } = await interruptWithin(fiber, 3_000, "Fiber.interrupt")
        check(elapsed < 3_000, `Fiber.interrupt took ${Math.round(elapsed)} ms`)
        await stopsOnServer("Fiber.interrupt", started, 2_000)
      }
      // Effect.timeout
      {
        const started = now()
        const fiber = client.start([timeout(TIMER_MS, statement)])
        await waitRunning(ctx, "pg_sleep(10)")
        const outcome = await ended(fiber, TIMER_MS + 3_000, "Effect.timeout")
        const elapsed = now() - started - TIMER_MS
        check(outcome._tag === "Failure", `Effect.timeout: expected its timeout error, got ${describeOutcome(outcome)}`)
        check(elapsed < 3_000, `Effect.timeout: the interruption took ${Math.round(elapsed)} ms`)
        await stopsOnServer("Effect.timeout", started + TIMER_MS, 2_000)
      }
      // Effect.race with a faster effect
      {
        const started = now()
        const fiber = client.start([raceTimer(TIMER_MS, statement)])
        await waitRunning(ctx, "pg_sleep(10)")
        const outcome = await ended(fiber, TIMER_MS + 3_000, "Effect.race")
        const elapsed = now() - started - TIMER_MS
        check(
          outcome._tag === "Success" && outcome.value === "timer",
          `Effect.race: expected the timer to win, got ${describeOutcome(outcome)}`
        )
        check(elapsed < 3_000, `Effect.race: the interruption took ${Math.round(elapsed)} ms`)
        await stopsOnServer("Effect.race", started + TIMER_MS, 2_000)
      }
      // Closing a parent scope
      {
        const scope = await client.scope()
        client.start([statement], { scope })
        await waitRunning(ctx, "pg_sleep(10)")
        const started = now()
        await within(3_000, "Scope.close", scope.close())
        const elapsed = now() - started
        check(elapsed < 3_000, `Scope.close took ${Math.round(elapsed)} ms`)
        await stopsOnServer("Scope.close", started, 2_000)
      }
      await stillWorks(client, "a statement after the interruptions")
    })
}

/** 3. A waiter interrupted while waiting for the only connection, racing the hand-off, must not lose the slot. */
const interruptedWaiter: Case = {
  id: "interrupted-waiter",
  contract: "C5",
  title: "20 waiters interrupted around the hand-off (statement, withTransaction, reserve) never lose the pool slot",
  run: (ctx) =>
    withContender(ctx, { maxConnections: 1 }, async (client) => {
      for (let i = 0; i < 20; i++) {
        const what = `iteration ${i + 1}`
        const acquired = latch()
        const release = latch()
        const hold = [call(acquired.resolve), wait(() => release.promise)]
        const holder = client.start(
          i % 2 === 0 ? [transaction(sql("select 1"), ...hold)] : [reserve(sql("select 1"), ...hold)]
        )
        await within(5_000, `${what}: holder acquiring`, acquired.promise)
        const waiter = client.start(
          i % 3 === 0 ? [sql("select 1")] : i % 3 === 1 ? [transaction(sql("select 1"))] : [reserve(sql("select 1"))]
        )
        if (i < 6) {
          // The waiter is surely queued (no server-side signal exists for that), then interrupted, then the holder
          // lets go.
          await sleep(30)
          waiter.interrupt()
          release.resolve()
        } else {
          // Race the hand-off: release and interruption at random times within 0–10 ms of each other.
          setTimeout(release.resolve, randomInt(10))
          await sleep(randomInt(10))
          waiter.interrupt()
        }
        const holderOutcome = await ended(holder, 3_000, `${what}: holder finishing`)
        check(holderOutcome._tag === "Success", `${what}: the holder failed: ${describeOutcome(holderOutcome)}`)
        const waiterOutcome = await ended(waiter, 3_000, `${what}: interrupted waiter ending`)
        check(
          successOrInterrupted(waiterOutcome),
          `${what}: the interrupted waiter ended with ${describeOutcome(waiterOutcome)}`
        )
        await stillWorks(client, `${what}: a new statement after the interrupted waiter (lost slot?)`)
      }
    })
}

/** 4. Interrupted between statements of a transaction: rolled back, nothing idle in transaction. */
const betweenStatements: Case = {
  id: "between-statements",
  contract: "C3",
  title: "interrupted between statements in a transaction: the row is not there, no backend idle in transaction",
  run: async (ctx) => {
    await ddl(ctx, `CREATE TABLE ${ctx.schema}.t (id int)`)
    await withContender(ctx, { maxConnections: 1 }, async (client) => {
      const inserted = latch()
      const fiber = client.start([
        transaction(sql(`INSERT INTO ${ctx.schema}.t VALUES (1)`), call(inserted.resolve), never)
      ])
      await within(5_000, "insert", inserted.promise)
      await waitForBackends(ctx, (bs) => bs.some(inTransaction), 5_000, "transaction never seen open")
      const { elapsed } = await interruptWithin(fiber, 3_000, "between statements")
      check(elapsed < 3_000, `interruption took ${Math.round(elapsed)} ms`)
      await waitNoneInTransaction(ctx, 2_000, "after the interruption")
      const rows = await count(ctx, "t")
      check(rows === 0, `the interrupted transaction's row is visible (${rows} rows)`)
      await stillWorks(client, "a statement after the interruption")
    })
    const rows = await count(ctx, "t")
    check(rows === 0, `after the layer closed the interrupted transaction's row is there (${rows} rows)`)
  }
}

/** 5. Interrupted while COMMIT runs (a deferred constraint trigger sleeps in it). */
const duringCommit: Case = {
  id: "during-commit",
  contract: "C3",
  title: "interrupted during a slow COMMIT: bounded, all-or-nothing, no backend left running COMMIT",
  run: async (ctx) => {
    await ddl(
      ctx,
      `CREATE TABLE ${ctx.schema}.t (id int);
       CREATE FUNCTION ${ctx.schema}.slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.id = 1 THEN PERFORM pg_sleep(5); END IF; RETURN NULL; END $$;
       CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON ${ctx.schema}.t
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ${ctx.schema}.slow_commit();`
    )
    await withContender(ctx, { maxConnections: 1 }, async (client) => {
      const fiber = client.start([transaction(sql(`INSERT INTO ${ctx.schema}.t VALUES (1), (2), (3)`))])
      await waitForBackends(ctx, (bs) => bs.some(runningCommit), 5_000, "server never showed COMMIT active")
      const { elapsed } = await interruptWithin(fiber, 3_000, "during COMMIT")
      check(elapsed < 3_000, `interruption took ${Math.round(elapsed)} ms`)
      await waitForBackends(
        ctx,
        (bs) => !bs.some(runningCommit),
        2_000,
        "a backend is still running COMMIT after the interruption"
      )
      await waitNoneInTransaction(ctx, 2_000, "after the interruption")
      const rows = await count(ctx, "t")
      check(rows === 0 || rows === 3, `the transaction is half there: ${rows} of 3 rows`)
      await stillWorks(client, "a statement after the interruption")
    })
    const rows = await count(ctx, "t")
    check(rows === 0 || rows === 3, `after the layer closed the transaction is half there: ${rows} of 3 rows`)
  }
}

/** 6. Closing the layer while a daemon fiber (outside the layer's scope) is inside a transaction. */
const shutdownWithDaemon: Case = {
  id: "shutdown-daemon",
  contract: "C1",
  title: "layer closed while a daemon fiber's transaction waits: it never commits, no backend remains",
  run: async (ctx) => {
    await ddl(ctx, `CREATE TABLE ${ctx.schema}.t (id int)`)
    const gate = latch()
    const firstInserted = latch()
    const client = await ctx.open({ maxConnections: 2 })
    const insert = (id: number) => sql(`INSERT INTO ${ctx.schema}.t VALUES (${id})`)
    const daemon = client.start(
      [
        transaction(
          insert(1),
          call(firstInserted.resolve),
          wait(() => gate.promise),
          insert(2)
        )
      ],
      { daemon: true }
    )
    try {
      await within(5_000, "first insert", firstInserted.promise)
      await within(5_000, "closing the layer's scope", client.close())
      gate.resolve()
      const outcome = await ended(daemon, 5_000, "the daemon fiber ending after the gate opened")
      check(
        outcome._tag !== "Success",
        "the daemon's transaction succeeded (committed) after the layer's scope had closed"
      )
      await noBackendsLeft(ctx)
      const rows = await count(ctx, "t")
      check(rows === 0, `the daemon's transaction committed after the layer closed: ${rows} rows`)
    } finally {
      gate.resolve()
      daemon.interrupt()
    }
  }
}

/**
 * 7. Many fibers, many transactions, half of them interrupted at random. Three rounds: one round interrupts few
 * fibers mid-statement by chance, three make the outcome reliable.
 */
const interruptionStorm: Case = {
  id: "interruption-storm",
  contract: "C3/C4",
  title: "3 rounds of 32 fibers x 5 transactions on a pool of 4, half interrupted at random: atomic, no collateral",
  run: async (ctx) => {
    await ddl(ctx, `CREATE TABLE ${ctx.schema}.t (tx int, n int)`)
    const ROUNDS = 3
    const FIBERS = 32
    const TX_PER_FIBER = 5
    await withContender(ctx, { maxConnections: 4 }, async (client) => {
      const insert = (tx: number, n: number) => sql(`INSERT INTO ${ctx.schema}.t VALUES (${tx}, ${n})`)
      for (let round = 1; round <= ROUNDS; round++) {
        const what = `round ${round}`
        const fiberKey = (i: number) => round * 1_000 + i
        const victims = new Set(
          Array.from({ length: FIBERS }, (_, i) => i)
            .sort(() => Math.random() - 0.5)
            .slice(0, FIBERS / 2)
        )
        const started = Array.from({ length: FIBERS }, latch)
        const begin = now()
        const fibers = Array.from({ length: FIBERS }, (_, i) =>
          client.start(
            Array.from({ length: TX_PER_FIBER }, (_, j) => {
              const tx = fiberKey(i) * 100 + j
              return transaction(insert(tx, 1), call(started[i]!.resolve), sql("select pg_sleep(0.005)"), insert(tx, 2))
            })
          )
        )
        // Each victim is interrupted 0–20 ms after its first transaction got going.
        for (const i of victims) {
          void started[i]!.promise.then(() => sleep(randomInt(20))).then(() => fibers[i]!.interrupt())
        }
        const outcomes = await within(
          5_000,
          `${what}: the storm (all fibers ending)`,
          Promise.all(fibers.map((fiber) => fiber.outcome))
        )
        const elapsed = now() - begin
        const collateral = outcomes.flatMap((outcome, i) =>
          victims.has(i) || outcome._tag === "Success" ? [] : [`fiber ${i}: ${describeOutcome(outcome)}`]
        )
        check(
          collateral.length === 0,
          `${what}: ${collateral.length} fibers nobody interrupted failed, e.g. ${collateral[0]}`
        )
        const victimFailures = outcomes.flatMap((outcome, i) =>
          victims.has(i) && !successOrInterrupted(outcome) ? [`fiber ${i}: ${describeOutcome(outcome)}`] : []
        )
        check(
          victimFailures.length === 0,
          `${what}: ${victimFailures.length} interrupted fibers failed instead of being interrupted, e.g. ${victimFailures[0]}`
        )
        await waitNoneInTransaction(ctx, 2_000, `${what}: after the storm`)
        const broken = await ctx.admin.query<{ tx: number; n: number }>(
          `SELECT tx, count(*)::int AS n FROM ${ctx.schema}.t GROUP BY tx HAVING count(*) <> 2 ORDER BY tx`
        )
        check(broken.length === 0, `${what}: non-atomic transactions (tx, rows): ${JSON.stringify(broken.slice(0, 5))}`)
        const survivors = [...Array(FIBERS).keys()].filter((i) => !victims.has(i)).map(fiberKey)
        const committed = await count(ctx, "t", `tx / 100 IN (${survivors.join(",")})`)
        check(
          committed === survivors.length * TX_PER_FIBER * 2,
          `${what}: uninterrupted fibers should have committed ${survivors.length * TX_PER_FIBER * 2} rows, found ${committed}`
        )
        check(elapsed < 5_000, `${what}: the storm took ${Math.round(elapsed)} ms`)
      }
    })
  }
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
    withContender(ctx, { maxConnections: Interruptions.saturation.connections }, (client) =>
      scenario(
        ctx,
        client,
        { _tag: "Saturation", scenario: Interruptions.saturation },
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

/** A transaction that must fail with a typed `SqlError` (not die, not succeed). */
const failsTyped = async (client: Client, program: Program, succeeded: string): Promise<void> => {
  const outcome = await runWithin(client, program, 5_000, "the transaction")
  check(
    outcome._tag !== "Defect",
    `withTransaction died instead of failing with a typed error: ${describeOutcome(outcome)}`
  )
  check(outcome._tag !== "Success", succeeded)
  check(
    outcome._tag === "Failure" && tagOf(outcome.error) === "SqlError",
    `expected an SqlError, got ${describeOutcome(outcome)}`
  )
}

/** 9. A COMMIT the server rejects (deferred unique constraint) is a typed failure. */
const failedCommit: Case = {
  id: "failed-commit",
  contract: "C6",
  title: "COMMIT failing on a deferred constraint fails withTransaction with a typed SqlError, not a defect",
  run: async (ctx) => {
    await ddl(
      ctx,
      `CREATE TABLE ${ctx.schema}.t (id int, CONSTRAINT t_id_unique UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)`
    )
    await withContender(ctx, { maxConnections: 1 }, async (client) => {
      await failsTyped(
        client,
        [transaction(sql(`INSERT INTO ${ctx.schema}.t VALUES (1), (1)`))],
        "withTransaction succeeded although COMMIT failed"
      )
      const rows = await count(ctx, "t")
      check(rows === 0, `the failed transaction's rows are there (${rows})`)
      await waitNoneInTransaction(ctx, 2_000, "after the failed COMMIT")
      await stillWorks(client, "a statement after the failed COMMIT")
    })
  }
}

/** 10. The server answers COMMIT with ROLLBACK because a statement failed (and the body swallowed the error). */
const commitRolledBack: Case = {
  id: "commit-rolled-back",
  contract: "C6",
  title: "a COMMIT the server turns into ROLLBACK fails withTransaction with a typed SqlError",
  run: async (ctx) => {
    await ddl(ctx, `CREATE TABLE ${ctx.schema}.t (id int)`)
    await withContender(ctx, { maxConnections: 1 }, async (client) => {
      await failsTyped(
        client,
        [transaction(sql(`INSERT INTO ${ctx.schema}.t VALUES (1)`), ignoreFailure(sql("select 1/0")))],
        "withTransaction succeeded silently although the server answered COMMIT with ROLLBACK"
      )
      const rows = await count(ctx, "t")
      check(rows === 0, `the rolled-back transaction's row is there (${rows})`)
      await stillWorks(client, "a statement after the rolled-back COMMIT")
    })
  }
}

/** 11. A raw BEGIN on a reserved connection, left open when the reservation's scope closes. */
const rawBeginOnReserve: Case = {
  id: "raw-begin-reserve",
  contract: "C3",
  title: "raw BEGIN + insert on sql.reserve, scope closed without COMMIT: rolled back, no dirty reuse",
  run: async (ctx) => {
    await ddl(ctx, `CREATE TABLE ${ctx.schema}.t (id int)`)
    await withContender(ctx, { maxConnections: 1 }, async (client) => {
      await succeeds(
        client,
        [reserve(sql("BEGIN"), sql(`INSERT INTO ${ctx.schema}.t VALUES (1)`))],
        5_000,
        "the reserved connection's work"
      )
      await waitNoneInTransaction(ctx, 2_000, "after the reservation's scope closed")
      // The next borrower gets the (only) connection: its autocommit insert must really commit, i.e. not run inside
      // the abandoned transaction.
      await succeeds(client, [sql(`INSERT INTO ${ctx.schema}.t VALUES (2)`)], 1_000, "the next borrower's insert")
      const afterNext = await ctx.admin.backends(ctx.app)
      check(
        !afterNext.some(inTransaction),
        `after the next borrower's statement the server shows ${describeBackends(afterNext)}`
      )
      const first = await count(ctx, "t", "id = 2")
      check(first === 1, "the next borrower's autocommit insert is not visible: it ran inside the open BEGIN")
    })
    const abandoned = await count(ctx, "t", "id = 1")
    const next = await count(ctx, "t", "id = 2")
    check(abandoned === 0, "the insert after the raw BEGIN was committed")
    check(next === 1, "the next borrower's autocommit insert was lost")
  }
}

/** 12. Waiting for a connection longer than the acquire timeout fails with a typed error. */
const acquireTimeout: Case = {
  id: "acquire-timeout",
  contract: "C5",
  title: "pool of 1 held: a statement fails with a typed SqlError after the acquire timeout (300 ms)",
  run: (ctx) =>
    withContender(ctx, { maxConnections: 1, acquireTimeoutMs: 300 }, async (client) => {
      const acquired = latch()
      const release = latch()
      const holder = client.start([
        reserve(
          call(acquired.resolve),
          wait(() => release.promise)
        )
      ])
      await within(5_000, "holder acquiring", acquired.promise)
      const started = now()
      const waiter = client.start([sql("select 1")])
      const outcome = await Promise.race([waiter.outcome, sleep(3_000).then(() => undefined)])
      const elapsed = now() - started
      if (outcome === undefined) waiter.interrupt()
      release.resolve()
      await ended(holder, 3_000, "holder finishing")
      check(outcome !== undefined, "a statement waiting for a held pool of 1 neither failed nor succeeded within 3 s")
      check(outcome._tag !== "Success", "the statement succeeded although the only connection was held")
      check(
        outcome._tag === "Failure" && tagOf(outcome.error) === "SqlError",
        `expected a typed SqlError, got ${describeOutcome(outcome)}`
      )
      check(elapsed >= 250, `the acquire timeout fired after ${Math.round(elapsed)} ms (configured 300 ms)`)
      await stillWorks(client, "a statement after the acquire timeout")
    })
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
  run: async (ctx) => {
    await ddl(ctx, `CREATE TABLE ${ctx.schema}.t (id int)`)
    const proxy: FaultProxy = await startProxy(proxyTarget(ctx.url))
    try {
      await withContender(ctx, { maxConnections: 1, url: proxy.rewrite(ctx.url) }, async (client) => {
        try {
          const inserted = latch()
          const fiber = client.start([
            transaction(sql(`INSERT INTO ${ctx.schema}.t VALUES (1)`), call(inserted.resolve), never)
          ])
          await within(5_000, "insert", inserted.promise)
          await waitForBackends(ctx, (bs) => bs.some(inTransaction), 5_000, "transaction never seen open")

          proxy.setMode("blackhole")
          const { elapsed, outcome } = await interruptWithin(fiber, FAULT_BOUND_MS, "under the blackhole")
          check(elapsed < FAULT_BOUND_MS, `interruption took ${Math.round(elapsed)} ms`)
          check(
            successOrInterrupted(outcome),
            `the interrupted fiber ended with ${describeOutcome(outcome)} instead of being interrupted`
          )

          proxy.setMode("pass")
          await waitNoneInTransaction(ctx, 10_000, "10 s after traffic flowed again")
          const rows = await count(ctx, "t")
          check(rows === 0, `the interrupted transaction's row is visible (${rows} rows)`)
          await stillWorks(client, "a statement after the blackhole", 3_000)
        } catch (error) {
          // The contender may still wait for an answer the blackhole swallowed: cut its sockets so that its layer
          // can close.
          proxy.reset()
          throw error
        } finally {
          proxy.setMode("pass")
        }
      })
      const rows = await count(ctx, "t")
      check(rows === 0, `after the layer closed the interrupted transaction's row is there (${rows} rows)`)
    } finally {
      await proxy.close()
    }
  }
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
    withContender(ctx, { maxConnections: 1 }, async (client) => {
      let frozen: number | undefined
      const thaw = () => {
        if (frozen === undefined) return
        try {
          ctx.admin.thaw(frozen)
        } catch {
          // already gone
        }
        frozen = undefined
      }
      try {
        const fiber = client.start([transaction(sql("select 1"), sql("select pg_sleep(10)"))])
        const busy = await waitRunning(ctx, "pg_sleep(10)")
        const pid = busy.find(running("pg_sleep(10)"))!.pid
        frozen = pid
        ctx.admin.freeze(pid)

        const { elapsed, outcome } = await interruptWithin(fiber, FAULT_BOUND_MS, "with the backend frozen")
        check(elapsed < FAULT_BOUND_MS, `interruption took ${Math.round(elapsed)} ms`)
        check(
          outcome._tag === "Interrupted",
          `the interrupted fiber ended with ${describeOutcome(outcome)}, not as interrupted`
        )

        thaw()
        await waitForBackends(
          ctx,
          (bs) => !bs.some((b) => b.pid === pid),
          5_000,
          `the frozen backend ${pid} is still there 5 s after it was thawed`
        )
        await stillWorks(client, "a statement after the frozen backend", 3_000)
      } finally {
        thaw()
      }
    })
}

/**
 * 15. Someone else cancels the statement (`pg_cancel_backend` from another session: an operator, a watchdog). The
 * statement fails with SQLSTATE 57014 "due to user request", which is not a statement timeout: retrying it is not
 * known to be safe, so it must not be a retryable `StatementTimeoutError` (Effect 4's reason classes; an Effect 3
 * `SqlError` has neither a reason nor `isRetryable`).
 */
const cancelledByOther: Case = {
  id: "cancelled-by-other",
  contract: "C6",
  title:
    "a statement cancelled by pg_cancel_backend from another session is a typed, non-retryable SqlError (not StatementTimeoutError)",
  run: (ctx) =>
    withContender(ctx, { maxConnections: 1 }, async (client) => {
      const fiber = client.start([sql("select pg_sleep(10)")])
      const busy = await waitRunning(ctx, "pg_sleep(10)")
      const pid = busy.find(running("pg_sleep(10)"))!.pid
      await ctx.admin.query("SELECT pg_cancel_backend($1)", [pid])
      const outcome = await ended(fiber, 5_000, "the cancelled statement ending")
      check(outcome._tag !== "Success", "the statement succeeded although it was cancelled")
      const error = (outcome._tag === "Failure" ? outcome.error : undefined) as
        | { readonly _tag?: unknown; readonly reason?: { readonly _tag?: unknown }; readonly isRetryable?: unknown }
        | undefined
      check(tagOf(error) === "SqlError", `expected a typed SqlError, got ${describeOutcome(outcome)}`)
      check(sqlState(error) === "57014", `expected SQLSTATE 57014, got ${describeOutcome(outcome)}`)
      check(
        error?.reason?._tag !== "StatementTimeoutError",
        `a cancel at someone's request is classified as a StatementTimeoutError: ${describeOutcome(outcome)}`
      )
      check(error?.isRetryable !== true, `a cancel at someone's request is retryable: ${describeOutcome(outcome)}`)
      await stillWorks(client, "a statement after the cancelled one")
    })
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
    withContender(ctx, { maxConnections: Interruptions.storm.connections }, async (client) => {
      let interrupted = 0
      const limits = interruptionLimits(() => "")
      await scenario(
        ctx,
        client,
        { _tag: "Storm", scenario: { ...Interruptions.storm, durationMs: 3_000 } },
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
      check(interrupted > 0, "the storm interrupted nothing")
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
 * Runs one case against `contender`: its own admin connection, `application_name` and schema, and a hard time
 * limit (a contender that cannot be interrupted does not hold the test). Afterwards, whatever the outcome, every
 * layer the case opened is closed in the background, leftover backends of the case are thawed and terminated and
 * the schema is dropped, so one case's leaks do not spill into the next. `prefix` tells the editions' application
 * names apart.
 */
export const runCase = async (
  testCase: Case,
  contender: Contender,
  url: string,
  prefix = "",
  through?: ThroughBouncer
): Promise<void> => {
  const admin = await Admin.connect(through?.serverUrl ?? url)
  const app = uniqueAppName(`${prefix}${contender.name}-${testCase.id}`)
  const schema = `conformance_${randomBytes(6).toString("hex")}`
  const opened: Array<Client> = []
  const ctx: CaseContext = {
    url,
    admin,
    app,
    schema,
    open: async (options) => {
      const client = await contender.open(options.url ?? url, app, options)
      opened.push(client)
      return client
    },
    bouncer: through === undefined ? undefined : { adminUrl: through.adminUrl }
  }
  try {
    await admin.query(`CREATE SCHEMA ${schema}`)
    await within(CASE_TIME_LIMIT_MS, `${testCase.id}: case time limit`, testCase.run(ctx))
  } finally {
    for (const client of opened) void client.close().catch(() => undefined)
    await cleanUp(admin, app, schema)
    await admin.close()
  }
}

const cleanUp = async (admin: Admin, app: string, schema: string): Promise<void> => {
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
}
