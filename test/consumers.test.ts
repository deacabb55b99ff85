/**
 * Real consumers of `PgClient` / `SqlClient` on top of pg-warden's layer, against a real server:
 * `PgMigrator`, `@effect/sql-drizzle` (Pg), `@effect/sql-kysely` (Pg), and `@effect/sql`'s `Model`
 * repositories, `SqlResolver` batching and `SqlSchema`. Every write is checked from a separate
 * admin session.
 */
import { randomBytes } from "node:crypto"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Model from "@effect/sql/Model"
import * as SqlClient from "@effect/sql/SqlClient"
import * as SqlResolver from "@effect/sql/SqlResolver"
import * as SqlSchema from "@effect/sql/SqlSchema"
import * as PgDrizzle from "@effect/sql-drizzle/Pg"
import * as PgKysely from "@effect/sql-kysely/Pg"
import * as PgMigrator from "@effect/sql-pg/PgMigrator"
import { describe, expect, inject, it } from "@effect/vitest"
import * as DrizzleOrm from "drizzle-orm"
import * as DrizzlePgCore from "drizzle-orm/pg-core"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import type { Generated } from "kysely"
import { WardenClient } from "../src/index.js"
import { type Admin, uniqueAppName } from "./support/admin.js"
import "./support/context.js"
import { promise, scopedAdmin } from "./support/warden.js"

const url = inject("databaseUrl")

// @effect/sql-drizzle's package has no "type": "module", so its declarations see drizzle-orm's
// CommonJS typings (.d.cts), whose classes are nominally distinct from the ESM typings this file
// would get. At run time both sides load the same ESM modules; only the types are taken from .d.cts.
type DrizzleOrmTypes = typeof import("drizzle-orm", { with: { "resolution-mode": "require" }})
type DrizzlePgCoreTypes = typeof import("drizzle-orm/pg-core", { with: { "resolution-mode": "require" }})
const { eq } = DrizzleOrm as unknown as DrizzleOrmTypes
const { integer, pgTable, serial, text } = DrizzlePgCore as unknown as DrizzlePgCoreTypes

/** A table (or other relation) name no other test uses. */
const freshName = (prefix: string): string => `warden_${prefix}_${randomBytes(5).toString("hex")}`

/** Drops `names` from the admin session when the scope closes (whatever the test did). */
const dropAfter = (admin: Admin, ...names: ReadonlyArray<string>): Effect.Effect<void, never, Scope.Scope> =>
  Effect.addFinalizer(() =>
    Effect.forEach(names, (name) => promise(() => admin.query(`drop table if exists ${name}`)), { discard: true })
  )

const wardenLayer = (app: string, extra: Partial<WardenClient.WardenClientConfig> = {}) =>
  WardenClient.layer({ url: Redacted.make(url), applicationName: app, ...extra })

/** What pg-warden's layer provides: `SqlClient`, `PgClient`, `WardenPool`. */
type WardenServices = Layer.Layer.Success<ReturnType<typeof wardenLayer>>

/**
 * Runs `f` with pg-warden's `SqlClient` (and whatever `consumer` builds on it) under a fresh
 * `application_name`, with an admin session; afterwards the server shows no backend of the pool.
 */
const withConsumer = <ROut, A, E>(
  name: string,
  consumer: Layer.Layer<ROut, never, SqlClient.SqlClient>,
  f: (ctx: {
    sql: SqlClient.SqlClient
    admin: Admin
    app: string
  }) => Effect.Effect<A, E, ROut | WardenServices | Scope.Scope>
): Effect.Effect<A, unknown> => {
  const app = uniqueAppName(name)
  return Effect.scoped(
    Effect.gen(function* () {
      const admin = yield* scopedAdmin(url)
      const result = yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        return yield* f({ sql, admin, app })
      }).pipe(Effect.provide(Layer.provideMerge(consumer, wardenLayer(app))))
      yield* promise(() => admin.waitForNoBackends(app))
      return result
    })
  )
}

/** Columns of `table` as the server has them, in order. */
const columnsOf = (admin: Admin, table: string) =>
  promise(() =>
    admin.query<{ column_name: string }>(
      `select column_name from information_schema.columns where table_name = $1 order by ordinal_position`,
      [table]
    )
  ).pipe(Effect.map((rows) => rows.map((r) => r.column_name)))

const tableExists = (admin: Admin, table: string) =>
  promise(() => admin.query<{ t: string | null }>(`select to_regclass($1)::text as t`, [table])).pipe(
    Effect.map((rows) => rows[0]?.t !== null && rows[0]?.t !== undefined)
  )

/** A tracer that records every span (pg-warden makes `sql.execute` spans under any tracer but the built-in one). */
const recordingTracer = Effect.map(Effect.tracer, (builtin) => {
  const spans: Array<Tracer.Span> = []
  const tracer = Tracer.make({
    span: (...args) => {
      const span = builtin.span(...args)
      spans.push(span)
      return span
    },
    context: builtin.context
  })
  return { spans, tracer }
})

describe("PgMigrator on pg-warden", () => {
  const migrations = (table: string) => ({
    "1_create": Effect.flatMap(SqlClient.SqlClient, (sql) =>
      Effect.asVoid(sql`create table ${sql(table)} (id serial primary key, name text not null)`)
    ),
    "2_add_email": Effect.flatMap(SqlClient.SqlClient, (sql) =>
      Effect.asVoid(sql`alter table ${sql(table)} add column email text`)
    )
  })
  /** A third migration that changes the table, then fails: nothing of it may stay. */
  const broken = (table: string) =>
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      Effect.gen(function* () {
        yield* sql`alter table ${sql(table)} add column phone text`
        yield* sql`insert into ${sql(table)} (name, no_such_column) values (${"x"}, ${1})`
      })
    )
  const run = (migrationsTable: string, record: Parameters<typeof PgMigrator.fromRecord>[0]) =>
    PgMigrator.run({ loader: PgMigrator.fromRecord(record), table: migrationsTable }).pipe(
      Effect.provide(NodeContext.layer)
    )
  const recorded = (admin: Admin, migrationsTable: string) =>
    promise(() =>
      admin.query<{ migration_id: number; name: string }>(
        `select migration_id, name from ${migrationsTable} order by migration_id`
      )
    )

  it.live("runs two migrations once (table and column), and a second run is a no-op", () =>
    withConsumer("migrator", Layer.empty, ({ admin, app }) =>
      Effect.gen(function* () {
        const migrationsTable = freshName("mig")
        const table = freshName("migt")
        yield* dropAfter(admin, table, migrationsTable)

        expect(yield* run(migrationsTable, migrations(table))).toEqual([
          [1, "create"],
          [2, "add_email"]
        ])
        expect(yield* recorded(admin, migrationsTable)).toEqual([
          { migration_id: 1, name: "create" },
          { migration_id: 2, name: "add_email" }
        ])
        expect(yield* columnsOf(admin, table)).toEqual(["id", "name", "email"])

        // again: nothing to do, nothing changes
        expect(yield* run(migrationsTable, migrations(table))).toEqual([])
        expect((yield* recorded(admin, migrationsTable)).length).toBe(2)
        expect(yield* columnsOf(admin, table)).toEqual(["id", "name", "email"])
        // the migrator's transaction and LOCK TABLE left nothing open
        const backends = yield* promise(() => admin.backends(app))
        expect(backends.every((b) => b.state === "idle")).toBe(true)
      })
    )
  )

  it.live("a failing migration rolls back with everything of its run (the server shows no partial state)", () =>
    withConsumer("migrator-fail", Layer.empty, ({ admin, app }) =>
      Effect.gen(function* () {
        const migrationsTable = freshName("mig")
        const table = freshName("migt")
        yield* dropAfter(admin, table, migrationsTable)
        yield* run(migrationsTable, migrations(table))

        const exit = yield* Effect.exit(run(migrationsTable, { ...migrations(table), "3_broken": broken(table) }))
        // the migrator turns a failed migration into a defect carrying a MigrationError
        expect(Exit.isFailure(exit)).toBe(true)
        if (Exit.isFailure(exit)) {
          const defect = Cause.dieOption(exit.cause)
          expect(Option.isSome(defect) && (defect.value as { reason?: string }).reason).toBe("failed")
        }
        expect(yield* columnsOf(admin, table)).toEqual(["id", "name", "email"])
        expect((yield* recorded(admin, migrationsTable)).map((r) => r.migration_id)).toEqual([1, 2])
        const backends = yield* promise(() => admin.backends(app))
        expect(backends.map((b) => b.state).filter((s) => s !== "idle")).toEqual([])

        // a fresh database whose very first run fails: no table, no recorded migration
        const migrationsTable2 = freshName("mig")
        const table2 = freshName("migt")
        yield* dropAfter(admin, table2, migrationsTable2)
        const exit2 = yield* Effect.exit(run(migrationsTable2, { ...migrations(table2), "3_broken": broken(table2) }))
        expect(Exit.isFailure(exit2)).toBe(true)
        expect(yield* tableExists(admin, table2)).toBe(false)
        expect(yield* recorded(admin, migrationsTable2)).toEqual([])
      })
    )
  )
})

describe("@effect/sql-drizzle (Pg) on pg-warden", () => {
  const makeTable = (name: string) =>
    pgTable(name, {
      id: serial("id").primaryKey(),
      name: text("name").notNull(),
      score: integer("score").notNull()
    })

  it.live("inserts, selects, updates and deletes; a failing withTransaction rolls back", () =>
    withConsumer("drizzle", PgDrizzle.layer, ({ sql, admin }) =>
      Effect.gen(function* () {
        const db = yield* PgDrizzle.PgDrizzle
        const name = freshName("drizzle")
        yield* dropAfter(admin, name)
        yield* promise(() =>
          admin.query(`create table ${name} (id serial primary key, name text not null, score int not null)`)
        )
        const people = makeTable(name)
        const serverRows = () =>
          promise(() => admin.query<{ name: string; score: number }>(`select name, score from ${name} order by id`))

        yield* db.insert(people).values([
          { name: "ada", score: 1 },
          { name: "bob", score: 2 }
        ])
        expect(yield* serverRows()).toEqual([
          { name: "ada", score: 1 },
          { name: "bob", score: 2 }
        ])
        const [carol] = yield* db.insert(people).values({ name: "carol", score: 3 }).returning()
        expect(carol).toMatchObject({ name: "carol", score: 3 })
        expect(typeof carol!.id).toBe("number")

        const ada = yield* db.select().from(people).where(eq(people.name, "ada"))
        expect(ada).toEqual([{ id: expect.any(Number), name: "ada", score: 1 }])

        yield* db.update(people).set({ score: 10 }).where(eq(people.name, "ada"))
        yield* db.delete(people).where(eq(people.name, "bob"))
        expect(yield* serverRows()).toEqual([
          { name: "ada", score: 10 },
          { name: "carol", score: 3 }
        ])

        // a transaction that commits: drizzle's statements run on the transaction's connection
        yield* sql.withTransaction(
          Effect.gen(function* () {
            yield* db.insert(people).values({ name: "dan", score: 4 })
            const inside = yield* db.select().from(people).where(eq(people.name, "dan"))
            expect(inside.length).toBe(1)
          })
        )
        expect((yield* serverRows()).map((r) => r.name)).toEqual(["ada", "carol", "dan"])

        // a transaction that fails: its insert and update are not there
        const failed = yield* sql
          .withTransaction(
            Effect.gen(function* () {
              yield* db.insert(people).values({ name: "eve", score: 5 })
              yield* db.update(people).set({ score: 99 }).where(eq(people.name, "ada"))
              const inside = yield* db.select().from(people).where(eq(people.name, "eve"))
              expect(inside.length).toBe(1)
              return yield* Effect.fail("boom" as const)
            })
          )
          .pipe(Effect.either)
        expect(failed).toEqual(Either.left("boom"))
        expect(yield* serverRows()).toEqual([
          { name: "ada", score: 10 },
          { name: "carol", score: 3 },
          { name: "dan", score: 4 }
        ])

        // a statement error inside the transaction is a typed SqlError and rolls back too
        const bad = yield* sql
          .withTransaction(
            Effect.zipRight(
              db.insert(people).values({ name: "fay", score: 6 }),
              db.insert(people).values({ id: carol!.id, name: "dup", score: 0 })
            )
          )
          .pipe(Effect.either)
        expect(Either.isLeft(bad) && bad.left._tag).toBe("SqlError")
        expect((yield* serverRows()).map((r) => r.name)).toEqual(["ada", "carol", "dan"])
      })
    )
  )
})

interface PersonTable {
  id: Generated<number>
  name: string
  score: number
}

describe("@effect/sql-kysely (Pg) on pg-warden", () => {
  it.live("creates a table, inserts, selects, updates and deletes; a failing withTransaction rolls back", () =>
    withConsumer("kysely", Layer.empty, ({ admin }) =>
      Effect.gen(function* () {
        const name = freshName("kysely")
        yield* dropAfter(admin, name)
        // The table's name is new for every run; Kysely's types know it as "person".
        const person = name as "person"
        const db = yield* PgKysely.make<{ person: PersonTable }>()
        const serverRows = () =>
          promise(() => admin.query<{ name: string; score: number }>(`select name, score from ${name} order by id`))

        yield* db.schema
          .createTable(person)
          .addColumn("id", "serial", (c) => c.primaryKey())
          .addColumn("name", "text", (c) => c.notNull())
          .addColumn("score", "integer", (c) => c.notNull())
        expect(yield* columnsOf(admin, name)).toEqual(["id", "name", "score"])

        const inserted = yield* db
          .insertInto(person)
          .values([
            { name: "ada", score: 1 },
            { name: "bob", score: 2 }
          ])
          .returningAll()
        expect(inserted.map((r) => [r.name, r.score])).toEqual([
          ["ada", 1],
          ["bob", 2]
        ])
        expect(yield* serverRows()).toEqual([
          { name: "ada", score: 1 },
          { name: "bob", score: 2 }
        ])

        const ada = yield* db.selectFrom(person).selectAll().where("name", "=", "ada")
        expect(ada).toEqual([{ id: inserted[0]!.id, name: "ada", score: 1 }])

        yield* db.updateTable(person).set({ score: 10 }).where("name", "=", "ada")
        yield* db.deleteFrom(person).where("name", "=", "bob")
        expect(yield* serverRows()).toEqual([{ name: "ada", score: 10 }])

        // EffectKysely.withTransaction is the client's own, taken unbound
        yield* db.withTransaction(
          Effect.gen(function* () {
            yield* db.insertInto(person).values({ name: "carol", score: 3 })
            const inside = yield* db.selectFrom(person).select("score").where("name", "=", "carol")
            expect(inside).toEqual([{ score: 3 }])
          })
        )
        expect((yield* serverRows()).map((r) => r.name)).toEqual(["ada", "carol"])

        const failed = yield* db
          .withTransaction(
            Effect.gen(function* () {
              yield* db.insertInto(person).values({ name: "dan", score: 4 })
              yield* db.updateTable(person).set({ score: 99 }).where("name", "=", "ada")
              const inside = yield* db.selectFrom(person).select("name").where("name", "=", "dan")
              expect(inside).toEqual([{ name: "dan" }])
              return yield* Effect.fail("boom" as const)
            })
          )
          .pipe(Effect.either)
        expect(failed).toEqual(Either.left("boom"))
        expect(yield* serverRows()).toEqual([
          { name: "ada", score: 10 },
          { name: "carol", score: 3 }
        ])
      })
    )
  )
})

class Person extends Model.Class<Person>("Person")({
  id: Model.Generated(Schema.Int),
  name: Schema.String,
  score: Schema.Int
}) {}

describe("@effect/sql Model, SqlResolver and SqlSchema on pg-warden", () => {
  const createPeople = (admin: Admin) =>
    Effect.gen(function* () {
      const name = freshName("model")
      yield* dropAfter(admin, name)
      yield* promise(() =>
        admin.query(`create table ${name} (id serial primary key, name text not null, score int not null)`)
      )
      return name
    })

  it.live("Model.makeRepository: insert, findById, update, delete (checked from the server)", () =>
    withConsumer("model-repo", Layer.empty, ({ admin }) =>
      Effect.gen(function* () {
        const table = yield* createPeople(admin)
        const repo = yield* Model.makeRepository(Person, { tableName: table, spanPrefix: "People", idColumn: "id" })
        const serverRow = (id: number) =>
          promise(() =>
            admin.query<{ name: string; score: number }>(`select name, score from ${table} where id = $1`, [id])
          )

        const ada = yield* repo.insert(Person.insert.make({ name: "ada", score: 1 }))
        expect(ada).toBeInstanceOf(Person)
        expect(ada.name).toBe("ada")
        expect(yield* serverRow(ada.id)).toEqual([{ name: "ada", score: 1 }])
        yield* repo.insertVoid(Person.insert.make({ name: "bob", score: 2 }))

        const found = yield* repo.findById(ada.id)
        expect(Option.map(found, (p) => [p.id, p.name, p.score])).toEqual(Option.some([ada.id, "ada", 1]))
        expect(yield* repo.findById(ada.id + 1_000_000)).toEqual(Option.none())

        const updated = yield* repo.update(Person.update.make({ id: ada.id, name: "ada", score: 7 }))
        expect(updated.score).toBe(7)
        expect(yield* serverRow(ada.id)).toEqual([{ name: "ada", score: 7 }])
        yield* repo.updateVoid(Person.update.make({ id: ada.id, name: "Ada", score: 8 }))
        expect(yield* serverRow(ada.id)).toEqual([{ name: "Ada", score: 8 }])

        yield* repo.delete(ada.id)
        expect(yield* serverRow(ada.id)).toEqual([])
        expect(yield* repo.findById(ada.id)).toEqual(Option.none())
        const rest = yield* promise(() => admin.query<{ name: string }>(`select name from ${table}`))
        expect(rest).toEqual([{ name: "bob" }])
      })
    )
  )

  it.live("SqlResolver.ordered and findById batch several requests into one statement", () =>
    withConsumer("model-resolver", Layer.empty, ({ sql, admin }) =>
      Effect.gen(function* () {
        const table = yield* createPeople(admin)
        let insertBatches = 0
        let findBatches = 0
        const insertPerson = yield* SqlResolver.ordered("InsertPerson", {
          Request: Person.insert,
          Result: Person,
          execute: (requests) => {
            insertBatches++
            return sql`insert into ${sql(table)} ${sql.insert(requests).returning("*")}`
          }
        })
        const personById = yield* SqlResolver.findById("PersonById", {
          Id: Schema.Int,
          Result: Person,
          ResultId: (person) => person.id,
          execute: (ids) => {
            findBatches++
            return sql`select * from ${sql(table)} where ${sql.in("id", ids)}`
          }
        })
        const { spans, tracer } = yield* recordingTracer
        const statements = () =>
          spans.filter((s) => s.name === "sql.execute").map((s) => String(s.attributes.get("db.query.text")))

        const names = ["ada", "bob", "carol", "dan"]
        const people = yield* Effect.forEach(
          names,
          (name, i) => insertPerson.execute(Person.insert.make({ name, score: i })),
          { batching: true, concurrency: "unbounded" }
        ).pipe(Effect.withTracer(tracer))
        expect(people.map((p) => p.name)).toEqual(names)
        expect(insertBatches).toBe(1)
        expect(statements().length).toBe(1)
        expect(statements()[0]).toMatch(/^insert into/i)
        const server = yield* promise(() =>
          admin.query<{ id: number; name: string }>(`select id, name from ${table} order by id`)
        )
        expect(server.map((r) => r.name)).toEqual(names)
        expect(people.map((p) => p.id)).toEqual(server.map((r) => r.id))

        spans.length = 0
        const ids = [people[2]!.id, people[0]!.id, 999_999, people[3]!.id]
        const found = yield* Effect.forEach(ids, (id) => personById.execute(id), {
          batching: true,
          concurrency: "unbounded"
        }).pipe(Effect.withTracer(tracer))
        expect(found.map((o) => Option.map(o, (p) => p.name))).toEqual([
          Option.some("carol"),
          Option.some("ada"),
          Option.none(),
          Option.some("dan")
        ])
        expect(findBatches).toBe(1)
        expect(statements().length).toBe(1)
        expect(statements()[0]).toMatch(/ in \(/i)

        // inside a transaction the batch runs on the transaction's connection: it sees the uncommitted row
        const [pid] = yield* sql<{ pid: number }>`select pg_backend_pid() as pid`
        expect(typeof pid!.pid).toBe("number")
        const inTx = yield* sql
          .withTransaction(
            Effect.gen(function* () {
              const [eve] = yield* sql<{
                id: number
              }>`insert into ${sql(table)} (name, score) values (${"eve"}, ${5}) returning id`
              const both = yield* Effect.forEach([eve!.id, people[1]!.id], (id) => personById.execute(id), {
                batching: true,
                concurrency: "unbounded"
              })
              return yield* Effect.fail(both.map((o) => Option.map(o, (p) => p.name)))
            })
          )
          .pipe(Effect.flip)
        expect(inTx).toEqual([Option.some("eve"), Option.some("bob")])
        expect(findBatches).toBe(2)
        const after = yield* promise(() =>
          admin.query<{ name: string }>(`select name from ${table} where name = 'eve'`)
        )
        expect(after).toEqual([])
      })
    )
  )

  it.live("SqlSchema.findOne, findAll and void", () =>
    withConsumer("model-schema", Layer.empty, ({ sql, admin }) =>
      Effect.gen(function* () {
        const table = yield* createPeople(admin)
        yield* promise(() =>
          admin.query(`insert into ${table} (name, score) values ('ada', 1), ('bob', 2), ('carol', 3)`)
        )
        const findByName = SqlSchema.findOne({
          Request: Schema.String,
          Result: Person,
          execute: (name) => sql`select * from ${sql(table)} where name = ${name}`
        })
        const findAtLeast = SqlSchema.findAll({
          Request: Schema.Int,
          Result: Person,
          execute: (min) => sql`select * from ${sql(table)} where score >= ${min} order by id`
        })
        const bump = SqlSchema.void({
          Request: Schema.Struct({ name: Schema.String, by: Schema.Int }),
          execute: ({ by, name }) => sql`update ${sql(table)} set score = score + ${by} where name = ${name}`
        })

        const bob = yield* findByName("bob")
        expect(Option.map(bob, (p) => [p.name, p.score])).toEqual(Option.some(["bob", 2]))
        expect(Option.isSome(bob) && bob.value).toBeInstanceOf(Person)
        expect(yield* findByName("nobody")).toEqual(Option.none())
        expect((yield* findAtLeast(2)).map((p) => p.name)).toEqual(["bob", "carol"])

        yield* bump({ name: "ada", by: 10 })
        const server = yield* promise(() =>
          admin.query<{ score: number }>(`select score from ${table} where name = 'ada'`)
        )
        expect(server).toEqual([{ score: 11 }])
        expect((yield* findAtLeast(3)).map((p) => p.name)).toEqual(["ada", "carol"])

        // a request that does not encode fails with a ParseError before reaching the server
        const bad = yield* bump({ name: "ada", by: 1.5 }).pipe(Effect.either)
        expect(Either.isLeft(bad) && bad.left._tag).toBe("ParseError")
        expect(yield* promise(() => admin.query(`select score from ${table} where name = 'ada'`))).toEqual([
          { score: 11 }
        ])
      })
    )
  )
})
