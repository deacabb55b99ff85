/**
 * The per-connection prepared-statement cache (`statementCacheSize`, named statements) against a
 * real server: a statement the server invalidated (DDL from another session, `DISCARD ALL`,
 * `DEALLOCATE ALL`) must keep working without a single failure, outside and inside transactions,
 * on one connection and on a warm pool; the cache must stay effective (one prepared statement per
 * text and session, as `pg_prepared_statements` shows it); two pools in one process must not
 * disturb each other.
 */
import { randomBytes } from "node:crypto"
import type { Connection } from "@effect/sql/SqlConnection"
import type { SqlError } from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import { describe, expect, inject, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import { WardenClient, WardenError } from "../src/index.js"
import { type Admin, uniqueAppName } from "./support/admin.js"
import "./support/context.js"
import { promise, safeJson, scopedAdmin, waitForBackends } from "./support/warden.js"

const url = inject("databaseUrl")

const freshTable = (prefix: string): string => `warden_sc_${prefix}_${randomBytes(5).toString("hex")}`

const layerFor = (app: string, extra: Partial<WardenClient.WardenClientConfig>) =>
  WardenClient.layer({ url: Redacted.make(url), applicationName: app, ...extra })

/**
 * Creates `table` (`id int primary key, a int`, with `rows`) from the admin session and drops it
 * when the scope closes.
 */
const createTable = (
  admin: Admin,
  table: string,
  rows: ReadonlyArray<readonly [number, number]>
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    yield* Effect.addFinalizer(() => promise(() => admin.query(`drop table if exists ${table}`)))
    yield* promise(() => admin.query(`create table ${table} (id int primary key, a int)`))
    for (const [id, a] of rows) yield* promise(() => admin.query(`insert into ${table} values ($1, $2)`, [id, a]))
  })

/**
 * Runs `f` on a pg-warden pool under a fresh `application_name`, with an admin session; after
 * the pool's layer closed, the server shows none of its backends.
 */
const withPool = <A, E>(
  name: string,
  config: Partial<WardenClient.WardenClientConfig>,
  f: (ctx: { sql: PgClient.PgClient; admin: Admin; app: string }) => Effect.Effect<A, E, Scope.Scope>
): Effect.Effect<A, E | SqlError> => {
  const app = uniqueAppName(name)
  return Effect.scoped(
    Effect.gen(function* () {
      const admin = yield* scopedAdmin(url)
      const result = yield* Effect.flatMap(PgClient.PgClient, (sql) => f({ sql, admin, app })).pipe(
        Effect.provide(layerFor(app, config))
      )
      yield* promise(() => admin.waitForNoBackends(app))
      return result
    })
  )
}

/** "SQLSTATE 0A000: cached plan must not change result type", for assertion messages. */
const describeError = (error: unknown): string => {
  const state = WardenError.sqlState(error)
  const message = error instanceof Error ? error.message : safeJson(error)
  return `${state === undefined ? "" : `SQLSTATE ${state}: `}${message}`
}

/** The statement must succeed: a failure fails the test with its SQLSTATE and message. */
const ok = <A, E, R>(what: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, never, R> =>
  Effect.flatMap(Effect.either(effect), (result) =>
    Either.isRight(result)
      ? Effect.succeed(result.right)
      : Effect.dieMessage(`${what} failed with ${describeError(result.left)}`)
  )

const PREPARED_COUNT = `select pg_backend_pid() as pid, count(*)::int as n, bool_and(not from_sql) as protocol,
                                 (extract(epoch from max(prepare_time)) * 1000000)::int8::text as prepared_at
                            from pg_prepared_statements where statement = $1`

interface PreparedCount {
  readonly pid: number
  /** How many prepared statements of the session have this text. */
  readonly n: number
  /** All of them prepared through the protocol (`from_sql = false`), not with PREPARE. */
  readonly protocol: boolean | null
  /** When the newest of them was prepared, in microseconds since the epoch (server clock). */
  readonly preparedAt: number | null
}

const toPreparedCount = (row: any): PreparedCount => ({
  pid: row.pid,
  n: row.n,
  protocol: row.protocol,
  preparedAt: row.prepared_at === null ? null : Number(row.prepared_at)
})

/** How often the session behind `connection` holds `text` prepared (`pg_prepared_statements`). */
const preparedOn = (connection: Connection, text: string) =>
  ok(
    "reading pg_prepared_statements",
    Effect.map(connection.execute(PREPARED_COUNT, [text], undefined), (rows) => toPreparedCount(rows[0]))
  )

/** The same through the pool: only meaningful with `maxConnections: 1`. */
const preparedOnPool = (sql: PgClient.PgClient, text: string) =>
  ok(
    "reading pg_prepared_statements",
    Effect.map(sql.unsafe(PREPARED_COUNT, [text]), (rows) => toPreparedCount(rows[0]))
  )

/** The server's clock now, in microseconds since the epoch. */
const serverNow = (admin: Admin) =>
  promise(() =>
    admin.query<{ t: string }>(`select (extract(epoch from clock_timestamp()) * 1000000)::int8::text as t`)
  ).pipe(Effect.map((rows) => Number(rows[0]!.t)))

const backendPid = (sql: PgClient.PgClient) =>
  Effect.map(sql<{ pid: number }>`select pg_backend_pid() as pid`, (rows) => rows[0]!.pid)

describe("prepared statements invalidated by DDL from another session", () => {
  it.live("a parameterised SELECT * prepared before ALTER TABLE ADD COLUMN returns the new column (no 0A000)", () =>
    withPool("sc-ddl", { maxConnections: 1 }, ({ sql, admin }) =>
      Effect.gen(function* () {
        const table = freshTable("ddl")
        yield* createTable(admin, table, [
          [1, 10],
          [2, 20]
        ])
        const lookup = (id: number) => sql`select * from ${sql(table)} where id = ${id}`
        const [text] = lookup(1).compile()
        for (let i = 0; i < 3; i++) expect(yield* ok("lookup", lookup(1))).toEqual([{ id: 1, a: 10 }])
        const before = yield* preparedOnPool(sql, text)
        expect(before.n, "the lookup is prepared (named) on the session before the ALTER").toBe(1)

        yield* promise(() => admin.query(`alter table ${table} add column c int`))

        expect(yield* ok("the lookup right after ALTER TABLE", lookup(1))).toEqual([{ id: 1, a: 10, c: null }])
        expect(yield* ok("the next lookup", lookup(2))).toEqual([{ id: 2, a: 20, c: null }])
        // the same session did it: it was not terminated or replaced to get rid of the statement
        expect(yield* backendPid(sql)).toBe(before.pid)

        yield* promise(() => admin.query(`alter table ${table} drop column a`))
        expect(yield* ok("the lookup after a second ALTER", lookup(2))).toEqual([{ id: 2, c: null }])
      })
    )
  )

  it.live(
    "inside withTransaction: an insert, then the stale lookup, commit: the lookup sees the column, the insert stays",
    () =>
      withPool("sc-ddl-tx", { maxConnections: 1 }, ({ sql, admin }) =>
        Effect.gen(function* () {
          const table = freshTable("ddltx")
          yield* createTable(admin, table, [[1, 10]])
          const lookup = (id: number) => sql`select * from ${sql(table)} where id = ${id}`
          const insert = (id: number, a: number) => sql`insert into ${sql(table)} (id, a) values (${id}, ${a})`
          const [text] = lookup(1).compile()
          for (let i = 0; i < 3; i++) yield* ok("lookup", lookup(1))
          yield* ok("insert", insert(2, 20))
          const before = yield* preparedOnPool(sql, text)
          expect(before.n, "the lookup is prepared on the session before the ALTER").toBe(1)

          yield* promise(() => admin.query(`alter table ${table} add column c int default 5`))

          // the stale statement is the second of the transaction
          const seen = yield* ok(
            "the transaction (insert, then the lookup prepared before ALTER)",
            sql.withTransaction(Effect.zipRight(insert(3, 30), lookup(1)))
          )
          expect(seen).toEqual([{ id: 1, a: 10, c: 5 }])
          expect(yield* promise(() => admin.query(`select * from ${table} where id = 3`))).toEqual([
            { id: 3, a: 30, c: 5 }
          ])

          // the stale statement is the first of the transaction (it carries BEGIN)
          yield* promise(() => admin.query(`alter table ${table} add column d int default 6`))
          const first = yield* ok(
            "the transaction (the lookup prepared before ALTER first, then an insert)",
            sql.withTransaction(Effect.zipLeft(lookup(1), insert(4, 40)))
          )
          expect(first).toEqual([{ id: 1, a: 10, c: 5, d: 6 }])
          expect(yield* promise(() => admin.query(`select id from ${table} order by id`))).toEqual([
            { id: 1 },
            { id: 2 },
            { id: 3 },
            { id: 4 }
          ])
          expect(yield* backendPid(sql)).toBe(before.pid)
        })
      )
  )

  it.live("a warm pool of 10: after ALTER TABLE, 10 concurrent lookups all return the new column", () =>
    withPool("sc-ddl-pool", { maxConnections: 10, minConnections: 10 }, ({ sql, admin, app }) =>
      Effect.gen(function* () {
        const table = freshTable("ddlpool")
        yield* createTable(admin, table, [
          [1, 10],
          [2, 20]
        ])
        const lookup = (id: number) => sql`select * from ${sql(table)} where id = ${id}`
        const [text] = lookup(1).compile()
        yield* waitForBackends(admin, app, (bs) => bs.length === 10, { message: "minConnections: 10 opened" })

        // warm every connection: 200 concurrent lookups on 10 connections
        const warm = yield* ok(
          "warming lookups",
          Effect.all(
            Array.from({ length: 200 }, (_, i) => lookup(1 + (i % 2))),
            { concurrency: "unbounded" }
          )
        )
        expect(warm.every((rows) => rows.length === 1)).toBe(true)
        expect(yield* promise(() => admin.count(app))).toBe(10)
        // each of the 10 sessions holds the lookup prepared (read on each session itself)
        const sessions = yield* Effect.scoped(
          Effect.gen(function* () {
            const connections = yield* Effect.all(
              Array.from({ length: 10 }, () => sql.reserve),
              { concurrency: "unbounded" }
            )
            return yield* Effect.forEach(connections, (c) => preparedOn(c, text))
          })
        )
        expect(new Set(sessions.map((s) => s.pid)).size).toBe(10)
        expect(
          sessions.map((s) => s.n),
          "the lookup is prepared on all 10 sessions"
        ).toEqual(Array(10).fill(1))

        yield* promise(() => admin.query(`alter table ${table} add column c int`))

        const results = yield* Effect.all(
          Array.from({ length: 10 }, (_, i) => Effect.either(lookup(1 + (i % 2)))),
          { concurrency: "unbounded" }
        )
        const failures = results.filter(Either.isLeft).map((r) => describeError(r.left))
        expect(failures, `${failures.length} of 10 lookups failed after ALTER TABLE`).toEqual([])
        expect(results.map((r) => (Either.isRight(r) ? r.right : undefined))).toEqual(
          Array.from({ length: 10 }, (_, i) => [{ id: 1 + (i % 2), a: 10 * (1 + (i % 2)), c: null }])
        )
        // and on every session afterwards
        const again = yield* ok(
          "200 lookups after the ALTER",
          Effect.all(
            Array.from({ length: 200 }, () => lookup(2)),
            { concurrency: "unbounded" }
          )
        )
        expect(again.every((rows) => rows.length === 1 && "c" in rows[0]!)).toBe(true)
        expect(yield* promise(() => admin.count(app))).toBe(10)
      })
    )
  )

  it.live(
    "an INSERT ... RETURNING * prepared before ALTER TABLE ADD COLUMN returns the new column, in a transaction",
    () =>
      withPool("sc-returning", { maxConnections: 1 }, ({ sql, admin }) =>
        Effect.gen(function* () {
          const table = freshTable("ret")
          yield* createTable(admin, table, [])
          const insert = (id: number, a: number) => sql`insert into ${sql(table)} ${sql.insert({ id, a })} returning *`
          const [text] = insert(0, 0).compile()
          expect(yield* ok("insert", sql.withTransaction(insert(1, 10)))).toEqual([{ id: 1, a: 10 }])
          expect(yield* ok("insert", insert(2, 20))).toEqual([{ id: 2, a: 20 }])
          const before = yield* preparedOnPool(sql, text)
          expect(before.n, "the insert is prepared on the session before the ALTER").toBe(1)

          yield* promise(() => admin.query(`alter table ${table} add column c int default 7`))

          // first statement of the transaction (carries BEGIN)
          expect(
            yield* ok(
              "the INSERT ... RETURNING * after ALTER TABLE, in a transaction",
              sql.withTransaction(insert(3, 30))
            )
          ).toEqual([{ id: 3, a: 30, c: 7 }])

          // not the first statement of the transaction
          yield* promise(() => admin.query(`alter table ${table} add column d text default 'x'`))
          expect(
            yield* ok(
              "the INSERT ... RETURNING * after a second ALTER TABLE, second in its transaction",
              sql.withTransaction(Effect.zipRight(sql`select ${1}::int as one`, insert(4, 40)))
            )
          ).toEqual([{ id: 4, a: 40, c: 7, d: "x" }])

          expect(yield* promise(() => admin.query(`select * from ${table} order by id`))).toEqual([
            { id: 1, a: 10, c: 7, d: "x" },
            { id: 2, a: 20, c: 7, d: "x" },
            { id: 3, a: 30, c: 7, d: "x" },
            { id: 4, a: 40, c: 7, d: "x" }
          ])
          expect(yield* backendPid(sql)).toBe(before.pid)
        })
      )
  )
})

describe("prepared statements dropped by the user (DISCARD ALL, DEALLOCATE ALL) on a reserved connection", () => {
  for (const command of ["DISCARD ALL", "DEALLOCATE ALL"] as const) {
    /** A reserved connection whose `lookup` and `insert` texts were prepared, then `command` ran on it. */
    const prepareThenDrop = (sql: PgClient.PgClient, table: string) =>
      Effect.gen(function* () {
        const lookupText = `select a from ${table} where id = $1`
        const insertText = `insert into ${table} (id, a) values ($1, $2)`
        const connection = yield* sql.reserve
        const lookup = (id: number) => connection.execute(lookupText, [id], undefined)
        const insert = (id: number, a: number) => connection.execute(insertText, [id, a], undefined)
        yield* ok("insert", insert(1, 10))
        for (let i = 0; i < 3; i++) expect(yield* ok("lookup", lookup(1))).toEqual([{ a: 10 }])
        const before = yield* preparedOn(connection, lookupText)
        expect(before.n, "the lookup is prepared on the reserved session").toBe(1)
        expect(before.protocol, "prepared through the protocol, not with PREPARE").toBe(true)
        expect((yield* preparedOn(connection, insertText)).n).toBe(1)

        yield* ok(command, connection.executeUnprepared(command, [], undefined))
        // the server really dropped them (a statement without parameters: not prepared itself)
        const left = yield* connection.executeUnprepared(
          "select count(*)::int as n from pg_prepared_statements",
          [],
          undefined
        )
        expect(left).toEqual([{ n: 0 }])
        return { connection, lookup, insert, lookupText, insertText, pid: before.pid }
      })

    it.live(`after ${command}, the same parameterised statements succeed on that connection (no 26000)`, () =>
      withPool(`sc-${command.split(" ")[0]!.toLowerCase()}`, { maxConnections: 1 }, ({ sql, admin }) =>
        Effect.gen(function* () {
          const table = freshTable("drop")
          yield* createTable(admin, table, [])
          yield* Effect.scoped(
            Effect.gen(function* () {
              const { connection, lookup, insert, lookupText } = yield* prepareThenDrop(sql, table)
              expect(yield* ok(`the lookup right after ${command}`, lookup(1))).toEqual([{ a: 10 }])
              yield* ok(`the insert after ${command}`, insert(2, 20))
              expect(yield* ok(`a lookup after ${command}`, lookup(2))).toEqual([{ a: 20 }])
              // the cache works again: prepared once more, once
              for (let i = 0; i < 5; i++) yield* ok("lookup", lookup(1))
              expect((yield* preparedOn(connection, lookupText)).n).toBe(1)
            })
          )
          expect(yield* promise(() => admin.query(`select id, a from ${table} order by id`))).toEqual([
            { id: 1, a: 10 },
            { id: 2, a: 20 }
          ])
        })
      )
    )

    it.live(
      `after ${command}, the same statements succeed inside a transaction on that connection (BEGIN … COMMIT)`,
      () =>
        withPool(`sc-${command.split(" ")[0]!.toLowerCase()}-tx`, { maxConnections: 1 }, ({ sql, admin }) =>
          Effect.gen(function* () {
            const table = freshTable("droptx")
            yield* createTable(admin, table, [])
            yield* Effect.scoped(
              Effect.gen(function* () {
                const { connection, lookup, insert } = yield* prepareThenDrop(sql, table)
                yield* ok("BEGIN", connection.executeUnprepared("BEGIN", [], undefined))
                yield* ok(`the insert inside a transaction after ${command}`, insert(2, 20))
                expect(yield* ok(`the lookup inside a transaction after ${command}`, lookup(2))).toEqual([{ a: 20 }])
                yield* ok("COMMIT", connection.executeUnprepared("COMMIT", [], undefined))
              })
            )
            expect(yield* promise(() => admin.query(`select id, a from ${table} order by id`))).toEqual([
              { id: 1, a: 10 },
              { id: 2, a: 20 }
            ])
          })
        )
    )

    it.live(`after ${command} on a reserved connection, the next withTransaction on that session succeeds`, () =>
      withPool(`sc-${command.split(" ")[0]!.toLowerCase()}-wtx`, { maxConnections: 1 }, ({ sql, admin }) =>
        Effect.gen(function* () {
          const table = freshTable("dropwtx")
          yield* createTable(admin, table, [])
          const { pid } = yield* Effect.scoped(prepareThenDrop(sql, table))
          // the same texts through the client, on the same (only) session, first inside a transaction
          const lookup = (id: number) => sql.unsafe<{ a: number }>(`select a from ${table} where id = $1`, [id])
          const insert = (id: number, a: number) => sql.unsafe(`insert into ${table} (id, a) values ($1, $2)`, [id, a])
          const seen = yield* ok(
            `a transaction (insert, lookup) after ${command}`,
            sql.withTransaction(Effect.zipRight(insert(2, 20), lookup(2)))
          )
          expect(seen).toEqual([{ a: 20 }])
          expect(yield* backendPid(sql)).toBe(pid)
          expect(yield* promise(() => admin.query(`select id, a from ${table} order by id`))).toEqual([
            { id: 1, a: 10 },
            { id: 2, a: 20 }
          ])
        })
      )
    )
  }
})

describe("the cache stays effective", () => {
  it.live("50 runs of one parameterised statement on a pool of 1: exactly one prepared statement for its text", () =>
    withPool("sc-effective", { maxConnections: 1 }, ({ sql, admin }) =>
      Effect.gen(function* () {
        const table = freshTable("eff")
        yield* createTable(admin, table, [
          [1, 10],
          [2, 20]
        ])
        const lookup = (id: number) => sql`select a from ${sql(table)} where id = ${id}`
        const [text] = lookup(1).compile()
        yield* ok("warm-up", lookup(1))
        const warm = yield* preparedOnPool(sql, text)
        for (let i = 0; i < 50; i++) {
          expect(yield* ok("lookup", lookup(1 + (i % 2)))).toEqual([{ a: 10 * (1 + (i % 2)) }])
        }
        const pid = yield* backendPid(sql)
        const seen = yield* Effect.scoped(Effect.flatMap(sql.reserve, (connection) => preparedOn(connection, text)))
        // one entry, prepared through the protocol at the warm-up and reused since
        expect(seen).toEqual({ pid, n: 1, protocol: true, preparedAt: warm.preparedAt })
        // nothing else of this table's statements was prepared under other names
        const all = yield* Effect.scoped(
          Effect.flatMap(sql.reserve, (connection) =>
            connection.executeUnprepared(
              `select statement from pg_prepared_statements where statement like '%${table}%' and statement not like '%pg_prepared_statements%'`,
              [],
              undefined
            )
          )
        )
        expect(all).toEqual([{ statement: text }])
      })
    )
  )

  it.live(
    "after DDL invalidated it, the text is prepared again (once, freshly) and reused, not demoted to unnamed",
    () =>
      withPool("sc-effective-ddl", { maxConnections: 1 }, ({ sql, admin }) =>
        Effect.gen(function* () {
          const table = freshTable("effddl")
          yield* createTable(admin, table, [[1, 10]])
          const lookup = sql`select * from ${sql(table)} where id = ${1}`
          const [text] = lookup.compile()
          for (let i = 0; i < 3; i++) yield* ok("lookup", lookup)
          expect((yield* preparedOnPool(sql, text)).n).toBe(1)

          yield* promise(() => admin.query(`alter table ${table} add column c int`))
          const altered = yield* serverNow(admin)
          // (whether this first run succeeds is the subject of the tests above)
          yield* Effect.either(lookup)
          yield* ok("lookup after ALTER", lookup)
          const first = yield* preparedOnPool(sql, text)
          for (let i = 0; i < 50; i++) {
            expect(yield* ok("lookup after ALTER", lookup)).toEqual([{ id: 1, a: 10, c: null }])
          }
          const after = yield* preparedOnPool(sql, text)
          // one entry for the text, prepared after the ALTER (the stale one is gone), and not
          // prepared again for every run
          expect(after.n, "prepared statements with this text").toBe(1)
          expect(after.preparedAt! > altered, "the text's prepared statement is newer than the ALTER").toBe(true)
          expect(after.preparedAt, "the statement is reused, not prepared again per run").toBe(first.preparedAt)
        })
      )
  )

  it.live("after DISCARD ALL, the text is prepared again (once) and reused", () =>
    withPool("sc-effective-discard", { maxConnections: 1 }, ({ sql, admin }) =>
      Effect.gen(function* () {
        const table = freshTable("effdiscard")
        yield* createTable(admin, table, [[1, 10]])
        const lookup = sql`select a from ${sql(table)} where id = ${1}`
        const [text] = lookup.compile()
        for (let i = 0; i < 3; i++) yield* ok("lookup", lookup)
        expect((yield* preparedOnPool(sql, text)).n).toBe(1)

        yield* ok("DISCARD ALL", sql`discard all`)
        const discarded = yield* serverNow(admin)
        // (whether this first run succeeds is the subject of the tests above)
        yield* Effect.either(lookup)
        yield* ok("lookup after DISCARD ALL", lookup)
        const first = yield* preparedOnPool(sql, text)
        for (let i = 0; i < 50; i++) expect(yield* ok("lookup after DISCARD ALL", lookup)).toEqual([{ a: 10 }])
        const after = yield* preparedOnPool(sql, text)
        expect(after.n, "prepared statements with this text").toBe(1)
        expect(after.preparedAt! > discarded).toBe(true)
        expect(after.preparedAt, "the statement is reused, not prepared again per run").toBe(first.preparedAt)
      })
    )
  )
})

describe("two pools in one process", () => {
  it.live("each works, with shared and own statement texts, concurrently; each session prepares only its own", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const admin = yield* scopedAdmin(url)
        const table = freshTable("two")
        yield* createTable(
          admin,
          table,
          Array.from({ length: 20 }, (_, i) => [i + 1, (i + 1) * 10] as const)
        )
        const openPool = (app: string) =>
          Effect.gen(function* () {
            const scope = yield* Scope.make()
            yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
            const context = yield* Layer.buildWithScope(layerFor(app, { maxConnections: 1 }), scope)
            return { sql: Context.get(context, PgClient.PgClient), app, close: Scope.close(scope, Exit.void) }
          })
        const a = yield* openPool(uniqueAppName("sc-two-a"))
        const b = yield* openPool(uniqueAppName("sc-two-b"))

        // the same text on both pools, and one text of each pool's own (prepared first on each)
        const shared = (sql: PgClient.PgClient, id: number) => sql`select a from ${sql(table)} where id = ${id}`
        const onlyA = (id: number) => a.sql`select a + ${1000}::int as v from ${a.sql(table)} where id = ${id}`
        const onlyB = (id: number) => b.sql`select a * ${-1}::int as v from ${b.sql(table)} where id = ${id}`
        const [sharedText] = shared(a.sql, 1).compile()
        const [onlyAText] = onlyA(1).compile()
        const [onlyBText] = onlyB(1).compile()
        yield* ok("first statement on A", onlyA(1))
        yield* ok("first statement on B", onlyB(1))

        const work = Array.from({ length: 120 }, (_, i) => {
          const id = (i % 20) + 1
          switch (i % 4) {
            case 0:
              return Effect.map(shared(a.sql, id), (rows) => ["A shared", id, rows] as const)
            case 1:
              return Effect.map(shared(b.sql, id), (rows) => ["B shared", id, rows] as const)
            case 2:
              return Effect.map(onlyA(id), (rows) => ["A own", id, rows] as const)
            default:
              return Effect.map(onlyB(id), (rows) => ["B own", id, rows] as const)
          }
        })
        const results = yield* ok("mixed statements on two pools", Effect.all(work, { concurrency: 8 }))
        for (const [kind, id, rows] of results) {
          const expected =
            kind === "A own" ? [{ v: id * 10 + 1000 }] : kind === "B own" ? [{ v: -id * 10 }] : [{ a: id * 10 }]
          expect(rows, `${kind} ${id}`).toEqual(expected)
        }
        expect(yield* promise(() => admin.count(a.app))).toBe(1)
        expect(yield* promise(() => admin.count(b.app))).toBe(1)

        // each session holds exactly its own pool's texts, once each
        const preparedTexts = (sql: PgClient.PgClient) =>
          Effect.scoped(
            Effect.flatMap(sql.reserve, (connection) =>
              connection.executeUnprepared(
                `select statement from pg_prepared_statements where statement like '%${table}%' and statement not like '%pg_prepared_statements%' order by statement`,
                [],
                undefined
              )
            )
          ).pipe(Effect.map((rows) => (rows as ReadonlyArray<{ statement: string }>).map((r) => r.statement)))
        expect(yield* preparedTexts(a.sql)).toEqual([onlyAText, sharedText].sort())
        expect(yield* preparedTexts(b.sql)).toEqual([onlyBText, sharedText].sort())

        // closing one pool leaves the other working, and a third pool works next to it
        yield* a.close
        yield* promise(() => admin.waitForNoBackends(a.app))
        expect(yield* ok("B after A closed", shared(b.sql, 3))).toEqual([{ a: 30 }])
        const c = yield* openPool(uniqueAppName("sc-two-c"))
        expect(yield* ok("C, shared text", shared(c.sql, 4))).toEqual([{ a: 40 }])
        expect(yield* ok("C, B's text on C", c.sql.unsafe(onlyBText, [-1, 5]))).toEqual([{ v: -50 }])
        expect(yield* ok("B again", onlyB(6))).toEqual([{ v: -60 }])
        yield* b.close
        yield* c.close
        yield* promise(() => admin.waitForNoBackends(b.app))
        yield* promise(() => admin.waitForNoBackends(c.app))
      })
    )
  )
})
