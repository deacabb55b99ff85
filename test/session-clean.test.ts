/**
 * C8 Session-clean: the next borrower of a connection never sees the session state a previous
 * lease left behind. After a lease (a `sql.reserve` scope, a `withTransaction`, or one pooled
 * statement) whose statements may have changed session state, the session is reset (a
 * `DISCARD ALL`-equivalent plus the `onConnect` baseline) before anyone else gets it, counted as
 * `counters.reset`; a session whose reset cannot complete is terminated.
 *
 * Every case runs on a pool of one, so the next borrower gets the same physical connection: same
 * `pg_backend_pid()` (reset, not terminated), and the server's view (settings, `pg_locks`,
 * `pg_stat_activity`, temp schema, prepared statements, listening channels, cursors) is as it was
 * before the lease.
 */
import { randomBytes } from "node:crypto"
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { describe, expect, inject, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as WardenClient from "../src/WardenClient.js"
import * as WardenError from "../src/WardenError.js"
import type * as WardenPool from "../src/WardenPool.js"
import { type Admin, uniqueAppName } from "./support/admin.js"
import "./support/context.js"
import {
  backendPid,
  configFor,
  deadlines,
  expectSqlError,
  MARGIN_MS,
  open,
  promise,
  scopedAdmin,
  thawQuietly
} from "./support/warden.js"

const url = inject("databaseUrl")

/** Lower-case hex, safe inside identifiers. */
const token = (): string => randomBytes(4).toString("hex")

/** `counters.reset` of the pool (leases whose session was reset), asserting the stats report it. */
const resetsOf = (stats: WardenPool.PoolStats): number => {
  const reset = stats.counters.reset
  expect(reset, "pool.stats.counters.reset (release outcome `reset`) is missing").toBeTypeOf("number")
  return reset
}

const resets = (pool: WardenPool.WardenPool): Effect.Effect<number> => Effect.map(pool.stats, resetsOf)

/** `counters.reset` without an assertion, for a "before" value: the behaviour is checked first. */
const resetsRaw = (pool: WardenPool.WardenPool): Effect.Effect<number> =>
  Effect.map(pool.stats, (stats) => stats.counters.reset)

/**
 * Runs `body` with a fresh application name and an admin session: `body`'s own scope (the pool)
 * closes first, then the server must show no backend under that name.
 */
const scenario = <A, E>(
  name: string,
  body: (app: string, admin: Admin) => Effect.Effect<A, E, Scope.Scope>
): Effect.Effect<A, E> =>
  Effect.gen(function* () {
    const app = uniqueAppName(name)
    const admin = yield* scopedAdmin(url)
    const result = yield* Effect.scoped(body(app, admin))
    yield* promise(() => admin.waitForNoBackends(app))
    return result
  }).pipe(Effect.scoped)

// ---------------------------------------------------------------------------------------------------------------
// The table: kinds of session state × the paths a lease can take

/** Runs one statement text on a connection and returns its rows. */
type Exec = (text: string) => Effect.Effect<ReadonlyArray<any>, SqlError>

interface Ctx {
  readonly app: string
  readonly admin: Admin
  /** Random suffix for this case's names (prepared statement, cursor, channel, table, role). */
  readonly tok: string
  /** Advisory lock key for this case. */
  readonly key: number
  readonly role: string
}

interface Kind {
  readonly name: string
  /** Fixtures kept until after the pool has closed (e.g. a role). */
  readonly setup?: (ctx: Ctx) => Effect.Effect<void, never, Scope.Scope>
  /** The statement that changes the session. */
  readonly dirty: (ctx: Ctx) => string
  /** What a borrower sees of that state; the next borrower must see what was seen before the dirty lease. */
  readonly probe: (exec: Exec, ctx: Ctx) => Effect.Effect<unknown, SqlError>
  /** When set, the value the probe must give on a fresh session (pg-warden's own baseline). */
  readonly fresh?: (ctx: Ctx) => unknown
  /** The state only appears at COMMIT (LISTEN): a probe inside the transaction cannot see it yet. */
  readonly atCommit?: boolean
  /** Extra checks for the next borrower, run last. */
  readonly after?: (exec: Exec, ctx: Ctx) => Effect.Effect<void, SqlError>
}

const one = (exec: Exec, text: string) => Effect.map(exec(text), (rows) => rows[0])

const pidOn = (exec: Exec) =>
  Effect.map(exec("select pg_backend_pid() as pid"), (rows) => Number((rows[0] as { pid: number }).pid))

const setting = (name: string) => (exec: Exec) =>
  Effect.map(one(exec, `select current_setting('${name}') as v`), (row) => (row as { v: string }).v)

const kinds: ReadonlyArray<Kind> = [
  {
    name: "SET search_path",
    dirty: () => "SET search_path TO pg_catalog",
    probe: setting("search_path")
  },
  {
    name: "set_config(statement_timeout)",
    dirty: () => "SELECT set_config('statement_timeout', '1234', false)",
    probe: setting("statement_timeout")
  },
  {
    name: "SET application_name",
    dirty: (ctx) => `SET application_name = 'warden_dirty_${ctx.tok}'`,
    // pg_stat_activity must show the pool's name again (the audit and the cancel channel rely on it)
    probe: (exec, ctx) =>
      Effect.gen(function* () {
        const name = yield* setting("application_name")(exec)
        const pid = yield* pidOn(exec)
        const backends = yield* promise(() => ctx.admin.backends(ctx.app))
        return { setting: name, shownUnderPoolName: backends.some((b) => b.pid === pid) }
      }),
    fresh: (ctx) => ({ setting: ctx.app, shownUnderPoolName: true })
  },
  {
    name: "SET idle_in_transaction_session_timeout (a safety setting)",
    dirty: () => "SET idle_in_transaction_session_timeout = 0",
    probe: setting("idle_in_transaction_session_timeout"),
    fresh: () => "1min"
  },
  {
    name: "SET ROLE",
    setup: (ctx) =>
      Effect.acquireRelease(
        promise(async () => {
          await ctx.admin.query(`CREATE ROLE ${ctx.role} NOLOGIN`)
          await ctx.admin.query(`GRANT ${ctx.role} TO current_user`)
        }),
        () => promise(() => ctx.admin.query(`DROP ROLE IF EXISTS ${ctx.role}`).catch(() => undefined))
      ),
    dirty: (ctx) => `SET ROLE ${ctx.role}`,
    probe: (exec) => one(exec, "select current_user::text as current, session_user::text as session")
  },
  {
    name: "session advisory lock",
    dirty: (ctx) => `SELECT pg_advisory_lock(${ctx.key})`,
    probe: (exec, ctx) =>
      Effect.gen(function* () {
        const pid = yield* pidOn(exec)
        const [held] = yield* promise(() =>
          ctx.admin.query<{ n: number }>(
            "select count(*)::int as n from pg_locks where locktype = 'advisory' and pid = $1",
            [pid]
          )
        )
        // A second session gets the lock (and gives it back at once).
        const [tried] = yield* promise(() =>
          ctx.admin.query<{ got: boolean }>("select pg_try_advisory_lock($1::bigint) as got", [ctx.key])
        )
        if (tried!.got) {
          yield* promise(() => ctx.admin.query("select pg_advisory_unlock($1::bigint)", [ctx.key]))
        }
        return { advisoryLocksHeld: held!.n, otherSessionGetsIt: tried!.got }
      }),
    fresh: () => ({ advisoryLocksHeld: 0, otherSessionGetsIt: true })
  },
  {
    name: "temporary table",
    dirty: (ctx) => `CREATE TEMP TABLE warden_tmp_${ctx.tok} (a int)`,
    probe: (exec, ctx) =>
      one(
        exec,
        `select (select count(*)::int from pg_class where relnamespace = pg_my_temp_schema()) as temp_relations,
                to_regclass('warden_tmp_${ctx.tok}') is not null as resolves`
      ),
    fresh: () => ({ temp_relations: 0, resolves: false })
  },
  {
    name: "PREPARE",
    dirty: (ctx) => `PREPARE warden_p_${ctx.tok} AS SELECT 1`,
    probe: (exec, ctx) =>
      one(exec, `select count(*)::int as n from pg_prepared_statements where name = 'warden_p_${ctx.tok}'`),
    fresh: () => ({ n: 0 }),
    // the name is free again: no 42P05 (duplicate prepared statement)
    after: (exec, ctx) => Effect.asVoid(exec(`PREPARE warden_p_${ctx.tok} AS SELECT 1`))
  },
  {
    name: "LISTEN",
    atCommit: true,
    dirty: (ctx) => `LISTEN warden_ch_${ctx.tok}`,
    probe: (exec) => one(exec, "select count(*)::int as n from pg_listening_channels()"),
    fresh: () => ({ n: 0 })
  },
  {
    name: "DECLARE CURSOR WITH HOLD",
    // WITH HOLD works outside a transaction block too (it runs in an implicit one and survives it)
    dirty: (ctx) => `DECLARE warden_c_${ctx.tok} CURSOR WITH HOLD FOR SELECT 1`,
    probe: (exec) => one(exec, "select count(*)::int as n from pg_cursors where name <> ''"),
    fresh: () => ({ n: 0 })
  }
]

const TRANSACTION = "a committed withTransaction"

/** Marks a path on which the dirtying lease cannot look at its own session afterwards. */
const NOT_SEEN = Symbol("not seen")

interface Path {
  readonly name: string
  /** Runs `dirty` as one lease; returns what `probe` saw in that same lease (or NOT_SEEN). */
  readonly run: (
    sql: SqlClient.SqlClient,
    dirty: string,
    probe: (exec: Exec) => Effect.Effect<unknown, SqlError>
  ) => Effect.Effect<unknown, SqlError>
}

const paths: ReadonlyArray<Path> = [
  {
    name: "sql.reserve",
    run: (sql, dirty, probe) =>
      Effect.scoped(
        Effect.gen(function* () {
          const connection = yield* sql.reserve
          const exec: Exec = (text) => connection.executeUnprepared(text, [], undefined)
          yield* exec(dirty)
          return yield* probe(exec)
        })
      )
  },
  {
    name: "a pooled statement",
    run: (sql, dirty) => Effect.as(sql.unsafe(dirty), NOT_SEEN)
  },
  {
    name: TRANSACTION,
    run: (sql, dirty, probe) =>
      sql.withTransaction(
        Effect.zipRight(
          sql.unsafe(dirty),
          probe((text) => sql.unsafe(text))
        )
      )
  }
]

describe("C8 session-clean: the next borrower gets a reset session", () => {
  for (const kind of kinds) {
    for (const path of paths) {
      it.live(`${kind.name} on ${path.name}: same backend, reset, the next borrower sees none of it`, () =>
        Effect.gen(function* () {
          const tok = token()
          const app = uniqueAppName("c8")
          const admin = yield* scopedAdmin(url)
          const ctx: Ctx = {
            app,
            admin,
            tok,
            key: 700_000_000 + Math.floor(Math.random() * 1_000_000_000),
            role: `warden_role_${tok}`
          }
          if (kind.setup) yield* kind.setup(ctx)
          yield* Effect.scoped(
            Effect.gen(function* () {
              const { sql, pool } = yield* open(configFor(url, app, { maxConnections: 1 }))
              const pooled: Exec = (text) => sql.unsafe(text)
              const before = yield* kind.probe(pooled, ctx)
              if (kind.fresh) expect(before, "a fresh session (test sanity)").toEqual(kind.fresh(ctx))
              const pid = yield* backendPid(sql)
              const resetsBefore = yield* resetsRaw(pool)

              const inLease = yield* path.run(sql, kind.dirty(ctx), (exec) => kind.probe(exec, ctx))
              if (inLease !== NOT_SEEN && !(kind.atCommit && path.name === TRANSACTION)) {
                expect(inLease, `${kind.dirty(ctx)} changed the session it ran on (test sanity)`).not.toEqual(before)
              }

              const next = yield* Effect.either(kind.probe(pooled, ctx))
              if (Either.isLeft(next)) throw new Error(`the next borrower's probe failed: ${next.left.message}`)
              expect(next.right, `after ${kind.dirty(ctx)} on ${path.name}, the next borrower's view`).toEqual(before)
              expect(yield* backendPid(sql), "the same backend: the session was reset, not terminated").toBe(pid)
              const stats = yield* pool.stats
              expect(resetsOf(stats), "the lease was counted as a reset").toBeGreaterThan(resetsBefore)
              expect(stats.counters.terminated).toBe(0)
              if (kind.after) yield* kind.after(pooled, ctx)
            })
          )
          yield* promise(() => admin.waitForNoBackends(app))
        }).pipe(Effect.scoped)
      )
    }
  }
})

describe("C8 session-clean: when to reset, and what the baseline is", () => {
  it.live("leases that change nothing are not reset (counters.reset stays 0, same backend)", () =>
    scenario("c8-none", (app, admin) =>
      Effect.gen(function* () {
        const table = `warden_c8_${token()}`
        yield* promise(() => admin.query(`create table ${table} (v int)`))
        yield* Effect.addFinalizer(() => promise(() => admin.query(`drop table if exists ${table}`)))
        const { sql, pool } = yield* open(configFor(url, app, { maxConnections: 1 }))
        const pid = yield* backendPid(sql)
        for (let i = 0; i < 20; i++) {
          expect(yield* sql`select ${i}::int as i`).toEqual([{ i }])
          yield* sql`select 1 as one`
        }
        for (let i = 0; i < 5; i++) yield* sql`insert into ${sql(table)} values (${i})`
        yield* sql.withTransaction(
          Effect.zipRight(
            sql`insert into ${sql(table)} values (${100})`,
            sql`select count(*)::int as n from ${sql(table)}`
          )
        )
        yield* Effect.scoped(
          Effect.flatMap(sql.reserve, (c) => c.execute("select count(*)::int as n from pg_class", [], undefined))
        )
        expect(yield* backendPid(sql)).toBe(pid)
        const stats = yield* pool.stats
        expect(resetsOf(stats), "no lease changed session state").toBe(0)
        expect(stats.counters.terminated).toBe(0)
        const [{ n }] = yield* promise(() => admin.query<{ n: number }>(`select count(*)::int as n from ${table}`))
        expect(n).toBe(6)
      })
    )
  )

  it.live('sessionReset: "always" resets after every lease, also a plain select', () =>
    scenario("c8-always", (app) =>
      Effect.gen(function* () {
        const { sql, pool } = yield* open(configFor(url, app, { maxConnections: 1, sessionReset: "always" }))
        const pid = yield* backendPid(sql)
        const before = yield* resets(pool)
        for (let i = 0; i < 3; i++) yield* sql`select 1 as one`
        expect(yield* resets(pool), "three leases, three resets").toBe(before + 3)
        expect(yield* backendPid(sql), "reset, not terminated").toBe(pid)
        expect((yield* pool.stats).counters.terminated).toBe(0)
      })
    )
  )

  it("cleanupBound adds resetTimeout: 4.5 s with the defaults", () => {
    expect(Duration.toMillis(WardenClient.cleanupBound({}))).toBe(4_500)
    expect(Duration.toMillis(WardenClient.cleanupBound({ ...deadlines, resetTimeout: 200 }))).toBe(1_400)
  })

  it.live("a reset that cannot complete (frozen backend) terminates the session, within the cleanup bound", () =>
    scenario("c8-frozen", (app, admin) =>
      Effect.gen(function* () {
        const config = configFor(url, app, { maxConnections: 1, resetTimeout: 300 })
        const bound = Duration.toMillis(WardenClient.cleanupBound(config)) + MARGIN_MS
        const { sql, pool } = yield* open(config)
        const pid = yield* backendPid(sql)
        const before = yield* resetsRaw(pool)
        const scope = yield* Scope.make()
        const connection = yield* Scope.extend(sql.reserve, scope)
        yield* connection.executeUnprepared("SET search_path TO pg_catalog", [], undefined)
        const { elapsed, stats } = yield* Effect.gen(function* () {
          // The backend stops answering: the reset sent at release can never complete.
          admin.freeze(pid)
          const started = Date.now()
          yield* Scope.close(scope, Exit.void)
          const elapsed = Date.now() - started
          return { elapsed, stats: yield* pool.stats }
        }).pipe(Effect.ensuring(Effect.sync(() => thawQuietly(admin, pid))))
        expect(elapsed, `release took ${elapsed} ms (bound ${bound} ms)`).toBeLessThan(bound)
        expect(stats.counters.terminated, "the session whose reset did not complete was terminated").toBe(1)
        expect(resetsOf(stats), "a reset that did not complete is not counted as one").toBe(before)
        yield* promise(() =>
          admin.waitFor(
            () => admin.backends(app),
            (bs) => bs.every((b) => b.pid !== pid),
            { message: `frozen backend ${pid} ended` }
          )
        )
        expect(yield* backendPid(sql), "the next borrower gets a new session").not.toBe(pid)
      })
    )
  )

  it.live("pg-warden's own prepared statements keep working after a reset (its cache is cleared with them)", () =>
    scenario("c8-prepared", (app) =>
      Effect.gen(function* () {
        const { sql, pool } = yield* open(configFor(url, app, { maxConnections: 1 }))
        const pid = yield* backendPid(sql)
        for (let i = 0; i < 3; i++) expect(yield* sql`select ${i}::int as i`).toEqual([{ i }])
        const before = yield* resetsRaw(pool)
        yield* Effect.scoped(
          Effect.flatMap(sql.reserve, (c) =>
            c.executeUnprepared("SET search_path TO pg_catalog, public", [], undefined)
          )
        )
        // The reset drops every prepared statement on the server: the next use must not fail with 26000.
        const after = yield* Effect.either(sql`select ${7}::int as i`)
        if (Either.isLeft(after)) throw new Error(`a cached statement failed after the reset: ${after.left.message}`)
        expect(after.right).toEqual([{ i: 7 }])
        expect(yield* backendPid(sql)).toBe(pid)
        expect(yield* resets(pool)).toBeGreaterThan(before)
      })
    )
  )
})

describe("C8 session-clean: onConnect and startup settings are the baseline", () => {
  const hookSettings = (exec: Exec) =>
    one(
      exec,
      "select current_setting('search_path') as search_path, current_setting('statement_timeout') as statement_timeout"
    )

  it.live("onConnect's settings are the baseline the reset restores (same backend)", () =>
    scenario("c8-hook", (app) =>
      Effect.gen(function* () {
        const onConnect = (sql: SqlClient.SqlClient): Effect.Effect<void, SqlError> =>
          Effect.asVoid(Effect.zipRight(sql`set search_path to pg_catalog, public`, sql`set statement_timeout = 7777`))
        const { sql, pool } = yield* open(configFor(url, app, { maxConnections: 1, onConnect }))
        const pooled: Exec = (text) => sql.unsafe(text)
        const baseline = { search_path: "pg_catalog, public", statement_timeout: "7777ms" }
        expect(yield* hookSettings(pooled), "the hook ran before the first statement").toEqual(baseline)
        const pid = yield* backendPid(sql)
        const before = yield* resetsRaw(pool)
        yield* Effect.scoped(
          Effect.gen(function* () {
            const connection = yield* sql.reserve
            yield* connection.executeUnprepared("SET search_path TO public", [], undefined)
            yield* connection.executeUnprepared("set statement_timeout = 1", [], undefined)
          })
        )
        const next = yield* Effect.either(hookSettings(pooled))
        if (Either.isLeft(next)) {
          throw new Error(`the next borrower inherited statement_timeout = 1 ms: ${next.left.message}`)
        }
        expect(next.right, "the next borrower sees the hook's values again").toEqual(baseline)
        expect(yield* backendPid(sql), "reset, not reconnected").toBe(pid)
        expect(yield* resets(pool)).toBeGreaterThan(before)
        expect((yield* pool.stats).counters.terminated).toBe(0)
      })
    )
  )

  it.live("onConnect runs on every new connection, its statements on that connection", () =>
    scenario("c8-hook-each", (app) =>
      Effect.gen(function* () {
        const hookPids: Array<number> = []
        const onConnect = (sql: SqlClient.SqlClient): Effect.Effect<void, SqlError> =>
          Effect.gen(function* () {
            yield* sql`set statement_timeout = 7777`
            const [{ pid }] = yield* sql<{ pid: number }>`select pg_backend_pid() as pid`
            hookPids.push(pid)
          })
        const { sql } = yield* open(configFor(url, app, { maxConnections: 2, onConnect }))
        const seen = yield* Effect.scoped(
          Effect.gen(function* () {
            const a = yield* sql.reserve
            const b = yield* sql.reserve
            const read = (c: typeof a) =>
              Effect.map(
                c.executeUnprepared(
                  "select pg_backend_pid() as pid, current_setting('statement_timeout') as st",
                  [],
                  undefined
                ),
                (rows) => rows[0] as { pid: number; st: string }
              )
            return [yield* read(a), yield* read(b)]
          })
        )
        expect(seen[0]!.pid).not.toBe(seen[1]!.pid)
        expect(seen.map((s) => s.st)).toEqual(["7777ms", "7777ms"])
        for (const s of seen) expect(hookPids, `the hook ran on backend ${s.pid}`).toContain(s.pid)
      })
    )
  )

  it.live("a failing onConnect hook: the first statement fails with a typed SqlError, no backend remains", () =>
    scenario("c8-hook-fail", (app, admin) =>
      Effect.gen(function* () {
        let calls = 0
        const onConnect = (sql: SqlClient.SqlClient): Effect.Effect<void, SqlError> =>
          Effect.zipRight(
            Effect.sync(() => calls++),
            Effect.asVoid(sql`select 1/0`)
          )
        // The Layer build connects once (like PgClient): the failure may come from the build or the first statement.
        const exit = yield* Effect.exit(
          Effect.scoped(Effect.flatMap(open(configFor(url, app, { onConnect })), ({ sql }) => sql`select 1 as one`))
        )
        const error = expectSqlError(exit)
        expect(calls, "the hook ran").toBeGreaterThanOrEqual(1)
        expect(WardenError.sqlState(error), `the hook's SQLSTATE is kept: ${error.message}`).toBe("22012")
        yield* promise(() => admin.waitForNoBackends(app, 5_000))
      })
    )
  )

  it.live("a hanging onConnect hook is bounded by connectTimeout; the half-made connection is destroyed", () =>
    scenario("c8-hook-hang", (app, admin) =>
      Effect.gen(function* () {
        const onConnect = (sql: SqlClient.SqlClient): Effect.Effect<void, SqlError> =>
          Effect.asVoid(sql`select pg_sleep(10)`)
        const started = Date.now()
        const exit = yield* Effect.exit(
          Effect.scoped(
            Effect.flatMap(open(configFor(url, app, { onConnect, connectTimeout: 1_000 })), ({ sql }) => sql`select 1`)
          )
        )
        const elapsed = Date.now() - started
        expectSqlError(exit)
        expect(elapsed, `failed after ${elapsed} ms (connectTimeout 1000 ms)`).toBeLessThan(1_000 + MARGIN_MS)
        yield* promise(() => admin.waitForNoBackends(app, 5_000))
      })
    )
  )

  it.live("statementTimeout, lockTimeout and startupParameters go in the startup packet and survive a reset", () =>
    scenario("c8-startup", (app) =>
      Effect.gen(function* () {
        const { sql, pool } = yield* open(
          configFor(url, app, {
            maxConnections: 1,
            statementTimeout: "3 seconds",
            lockTimeout: "2 seconds",
            startupParameters: { work_mem: "8MB" }
          })
        )
        const show = sql<{
          st: string
          lt: string
          wm: string
          iit: string
        }>`select current_setting('statement_timeout') as st, current_setting('lock_timeout') as lt,
                  current_setting('work_mem') as wm, current_setting('idle_in_transaction_session_timeout') as iit`
        const sources = sql<{
          name: string
          source: string
        }>`select name, source from pg_settings where name in ('statement_timeout', 'lock_timeout', 'work_mem') order by name`
        const expected = [{ st: "3s", lt: "2s", wm: "8MB", iit: "1min" }]
        expect(yield* show).toEqual(expected)
        // "client": set by the startup packet, so RESET ALL / DISCARD ALL return to it
        expect(yield* sources).toEqual([
          { name: "lock_timeout", source: "client" },
          { name: "statement_timeout", source: "client" },
          { name: "work_mem", source: "client" }
        ])
        const pid = yield* backendPid(sql)
        const before = yield* resetsRaw(pool)
        yield* Effect.scoped(
          Effect.gen(function* () {
            const connection = yield* sql.reserve
            for (const text of ["set statement_timeout = 4000", "set lock_timeout = 0", "set work_mem = '1MB'"]) {
              yield* connection.executeUnprepared(text, [], undefined)
            }
          })
        )
        expect(yield* show, "the next borrower sees the configured values again").toEqual(expected)
        expect(yield* backendPid(sql)).toBe(pid)
        expect(yield* resets(pool)).toBeGreaterThan(before)
      })
    )
  )
})
