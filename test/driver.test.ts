/**
 * The contract with `pg` that pg-warden's session tracking rests on (src/internal/driver.ts), checked
 * against a real server: if a `pg` release changes one of these behaviours, this file fails before
 * any guarantee silently does.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from "@effect/vitest"
import pg from "pg"
import { WithClose } from "../src/core/begin.js"
import {
  backendKey,
  checkDriver,
  destroySocket,
  driverProblems,
  forgetParsed,
  isReadyForQuery,
  onReadyForQuery,
  transactionStatus,
  withParameterTypes
} from "../src/core/driver.js"
import { Session, type SessionConfig } from "../src/core/session.js"
import { Admin, uniqueAppName } from "./support/admin.js"
import "./support/context.js"

const url = inject("databaseUrl")
const app = uniqueAppName("driver")
let admin: Admin

beforeAll(async () => {
  admin = await Admin.connect(url)
})
afterAll(async () => {
  await admin.waitForNoBackends(app)
  await admin.close()
})

const connect = async (): Promise<pg.Client> => {
  const client = new pg.Client({ connectionString: url, application_name: app })
  client.on("error", () => {})
  await client.connect()
  return client
}

/** A pg Query with a callback, as the session submits them; resolves with its outcome. */
const submit = (client: pg.Client, config: pg.QueryConfig) => {
  let settle: (outcome: { error: unknown; result: unknown }) => void = () => {}
  const outcome = new Promise<{ error: unknown; result: unknown }>((resolve) => {
    settle = resolve
  })
  const query = new pg.Query(config, undefined, (error: unknown, result: unknown) => settle({ error, result }))
  client.query(query as unknown as pg.Submittable)
  return { query, outcome }
}

describe("the pg internals pg-warden relies on", () => {
  it("are all there in the installed pg", () => {
    expect(checkDriver()).toBe("")
  })

  it("the start-up check names what a pg release took away", () => {
    const prototype = pg.Query.prototype as unknown as Record<string, unknown>
    const saved = prototype.handleCopyData
    delete prototype.handleCopyData
    try {
      expect(driverProblems()).toBe("Query.handleCopyData()")
    } finally {
      prototype.handleCopyData = saved
    }
    expect(driverProblems()).toBe("")
  })

  it("BackendKeyData gives the backend's own pid", async () => {
    const client = await connect()
    const { pid, secretKey } = backendKey(client)
    const rows = (await client.query("select pg_backend_pid() as pid")).rows
    expect(pid).toBe(rows[0].pid)
    expect(secretKey).not.toBe(0)
    await client.end()
  })

  it("pg is not ready while a statement runs and ready again at its ReadyForQuery", async () => {
    const client = await connect()
    expect(isReadyForQuery(client)).toBe(true)
    const sleeping = submit(client, { text: "select pg_sleep(0.2) as slept" })
    expect(isReadyForQuery(client)).toBe(false)
    await sleeping.outcome
    expect(isReadyForQuery(client)).toBe(true)
    await client.end()
  })

  it("a session hands pg one statement at a time: pg's own (deprecated) queue is never used", async () => {
    const config: SessionConfig = {
      client: { connectionString: url },
      applicationName: app,
      connectTimeoutMs: 5_000,
      deadlines: { cancel: 500, drain: 500, rollback: 500, reset: 500, terminate: 500 },
      startupParameters: [],
      statementCacheSize: 16,
      cancelProbe: true,
      alwaysReset: false
    }
    const session = await new Promise<Session>((resolve, reject) =>
      Session.connect(config, (error, session) => (error ? reject(error) : resolve(session!)))
    )
    const client = session.client as unknown as { _queryQueue: Array<unknown>; query: (...args: Array<any>) => any }
    const seen: Array<{ queued: number; ready: boolean }> = []
    const query = client.query.bind(client)
    client.query = (...args: Array<any>) => {
      seen.push({ queued: client._queryQueue.length, ready: isReadyForQuery(session.client) })
      return query(...args)
    }
    // Ten statements at once (as Effect.all inside a transaction sends them), one of them failing.
    const outcomes = await Promise.all(
      Array.from(
        { length: 10 },
        (_, i) =>
          new Promise<unknown>((resolve) =>
            session.submit(
              { text: i === 4 ? "select 1/0 as n" : "select $1::int as n", values: i === 4 ? [] : [i] },
              (error, result: any) => resolve(error ? (error as { code?: string }).code : result.rows[0].n)
            )
          )
      )
    )
    expect(outcomes).toEqual([0, 1, 2, 3, "22012", 5, 6, 7, 8, 9])
    expect(seen).toHaveLength(10)
    expect(seen.every((s) => s.queued === 0 && s.ready)).toBe(true)
    await session.close()
  })

  it("ReadyForQuery is reported for every statement, with the transaction status", async () => {
    const client = await connect()
    let readies = 0
    onReadyForQuery(client, () => readies++)
    expect(transactionStatus(client)).toBe("I")
    await client.query("begin")
    expect(transactionStatus(client)).toBe("T")
    await client.query("select 1/0").catch(() => undefined)
    // pg reports the error at ErrorResponse; the status comes with the ReadyForQuery after it.
    for (let i = 0; i < 1000 && !isReadyForQuery(client); i++) await new Promise((resolve) => setTimeout(resolve, 1))
    expect(transactionStatus(client)).toBe("E")
    await client.query("rollback")
    expect(transactionStatus(client)).toBe("I")
    expect(readies).toBe(3)
    await client.end()
  })

  it("a named statement is parsed once; forgetting it and sending Close first prepares it again under its name", async () => {
    const client = await connect()
    const text = "select $1::int as n"
    const count = async () =>
      Number((await client.query("select count(*) as n from pg_prepared_statements where name = 'drv_1'")).rows[0].n)
    const first = submit(client, { name: "drv_1", text, values: [1] })
    expect((await first.outcome).error).toBeFalsy()
    const connection = (client as unknown as { connection: { parsedStatements: Record<string, string> } }).connection
    expect(connection.parsedStatements.drv_1).toBe(text)
    expect(await count()).toBe(1)
    // Without Close, parsing the same name again is refused by the server (42P05).
    forgetParsed(client, "drv_1")
    const clash = submit(client, { name: "drv_1", text, values: [2] })
    expect(((await clash.outcome).error as { code?: string }).code).toBe("42P05")
    // With Close in front (WithClose), the server drops the old form and takes the new Parse.
    forgetParsed(client, "drv_1")
    let settle: (error: unknown) => void = () => {}
    const done = new Promise((resolve) => {
      settle = resolve
    })
    const again = new pg.Query({ name: "drv_1", text, values: [3] }, undefined, (error: unknown, result: any) =>
      settle(error ?? result.rows[0].n)
    )
    client.query(new WithClose(again as never) as unknown as pg.Submittable)
    expect(await done).toBe(3)
    expect(await count()).toBe(1)
    await client.end()
  })

  it("a Query's types are both its Parse parameter types and its result parsers", async () => {
    const client = await connect()
    const parsers = { getTypeParser: (oid: number) => (oid === 20 ? (text: string) => `int8:${text}` : String) }
    for (const name of [undefined, "drv_types"]) {
      const typed = submit(client, {
        ...(name !== undefined ? { name } : {}),
        text: "select $1 as v, pg_typeof($1)::text as t",
        values: ["7"],
        types: withParameterTypes([20], parsers as never)
      })
      const { error, result } = await typed.outcome
      expect(error).toBeFalsy()
      // Untyped, `$1` would be text; declared int8 in the Parse, the server says bigint, and the
      // result's int8 column went through the array's own getTypeParser.
      expect((result as pg.QueryResult).rows[0]).toEqual({ v: "int8:7", t: "bigint" })
    }
    await client.end()
  })

  it("destroying the socket ends the session on the server", async () => {
    const client = await connect()
    const { pid } = backendKey(client)
    const ended = new Promise<void>((resolve) => client.on("end", () => resolve()))
    destroySocket(client)
    await ended
    await admin.waitFor(
      () => admin.backends(app),
      (backends) => backends.every((b) => b.pid !== pid),
      { message: "the destroyed session's backend is gone" }
    )
  })
})
