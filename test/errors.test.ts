/**
 * Typed errors: statement errors carry their SQLSTATE and leave the session clean (same backend
 * reused), and every failing Layer build fails with a typed `SqlError` and leaves no backend.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { afterAll, beforeAll, describe, expect, inject, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as WardenClient from "../src/WardenClient.js"
import * as WardenError from "../src/WardenError.js"
import { Admin, uniqueAppName } from "./support/admin.js"
import "./support/context.js"
import { findFreePort, type PrivateServer } from "./support/embedded.js"
import { rejectsWrongPassword, withUrl } from "./support/urls.js"
import {
  backendPid,
  configFor as configForUrl,
  expectSqlError,
  promise,
  safeJson,
  scopedAdmin,
  scopedPrivateServer
} from "./support/warden.js"

const databaseUrl = inject("databaseUrl")

/** `configFor` with a 5 s connect timeout unless `extra` says otherwise. */
const configFor = (
  url: string,
  applicationName: string,
  extra: Partial<WardenClient.WardenClientConfig> = {}
): WardenClient.WardenClientConfig => configForUrl(url, applicationName, { connectTimeout: 5_000, ...extra })

/** Builds the Layer in the test's scope and returns its `SqlClient`. */
const clientOf = (config: WardenClient.WardenClientConfig): Effect.Effect<SqlClient.SqlClient, SqlError, Scope.Scope> =>
  Effect.map(Layer.build(WardenClient.layer(config)), (context) => Context.get(context, SqlClient.SqlClient))

/** Builds (and closes) the Layer; the build must fail with a typed `SqlError`, which is returned. */
const buildFailure = (config: WardenClient.WardenClientConfig): Effect.Effect<SqlError> =>
  Effect.map(Effect.exit(Effect.scoped(clientOf(config))), expectSqlError)

describe("typed errors", () => {
  let admin: Admin

  beforeAll(async () => {
    admin = await Admin.connect(databaseUrl)
  })

  afterAll(async () => {
    await admin?.close()
  })

  /** After a failure, nothing for `app` on the server. */
  const noBackends = (app: string, on: Admin = admin) => promise(() => on.waitForNoBackends(app, 3_000))

  describe("statement errors keep the session clean", () => {
    it.live(
      "invalid SQL fails with 42601 and the same backend is reused",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const app = uniqueAppName("err-syntax")
            const sql = yield* clientOf(configFor(databaseUrl, app, { maxConnections: 1 }))
            const pid = yield* backendPid(sql)

            const error = expectSqlError(yield* Effect.exit(sql`selec 1`))
            expect(WardenError.sqlState(error)).toBe("42601")

            expect(yield* backendPid(sql)).toBe(pid)
            const backends = yield* promise(() => admin.backends(app))
            expect(backends.map((b) => [b.pid, b.state])).toEqual([[pid, "idle"]])
          })
        ),
      20_000
    )

    it.live(
      "wrong parameter type fails with 22P02, division by zero with 22012; the connection is reused",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            const app = uniqueAppName("err-data")
            const sql = yield* clientOf(configFor(databaseUrl, app, { maxConnections: 1 }))
            const pid = yield* backendPid(sql)

            const badInput = expectSqlError(yield* Effect.exit(sql`select ${"abc"}::int as n`))
            expect(WardenError.sqlState(badInput)).toBe("22P02")
            expect(yield* backendPid(sql)).toBe(pid)

            const divByZero = expectSqlError(yield* Effect.exit(sql`select 1 / ${0}::int as n`))
            expect(WardenError.sqlState(divByZero)).toBe("22012")
            expect(yield* backendPid(sql)).toBe(pid)

            // Inside a transaction too: the failed transaction is rolled back, the session reused.
            const inTx = expectSqlError(yield* Effect.exit(sql.withTransaction(sql`select 1 / 0 as n`)))
            expect(WardenError.sqlState(inTx)).toBe("22012")
            expect(yield* backendPid(sql)).toBe(pid)
            const backends = yield* promise(() => admin.backends(app))
            expect(backends.map((b) => [b.pid, b.state, b.xactStart])).toEqual([[pid, "idle", null]])
          })
        ),
      20_000
    )
  })

  describe("failing Layer builds", () => {
    it.live(
      "unreachable host (closed port): ConnectFailed",
      () =>
        Effect.gen(function* () {
          const app = uniqueAppName("err-refused")
          const port = yield* promise(() => findFreePort())
          const error = yield* buildFailure(
            configFor(`postgres://postgres:postgres@127.0.0.1:${port}/postgres`, app, { connectTimeout: 3_000 })
          )
          expect(WardenError.fromSqlError(error)?.reason).toBe("ConnectFailed")
          yield* noBackends(app)
        }),
      20_000
    )

    it.live(
      "wrong password: ConnectFailed with 28P01",
      () =>
        Effect.scoped(
          Effect.gen(function* () {
            // The shared server may trust every connection (local PG 15): then use a private scram server.
            let url = databaseUrl
            let on = admin
            if (!(yield* promise(() => rejectsWrongPassword(databaseUrl)))) {
              const server: PrivateServer = yield* scopedPrivateServer
              url = server.url
              on = yield* scopedAdmin(server.url)
              expect(yield* promise(() => rejectsWrongPassword(url))).toBe(true)
            }
            const app = uniqueAppName("err-password")
            const error = yield* buildFailure(
              configFor(
                withUrl(url, (u) => {
                  u.password = "definitely-wrong"
                }),
                app
              )
            )
            expect(WardenError.fromSqlError(error)?.reason).toBe("ConnectFailed")
            expect(WardenError.sqlState(error)).toBe("28P01")
            yield* noBackends(app, on)
          })
        ),
      60_000
    )

    it.live(
      "malformed URLs: InvalidConfig",
      () =>
        Effect.gen(function* () {
          for (const url of ["not a url", "postgres://host:99999/db"]) {
            const app = uniqueAppName("err-url")
            const error = yield* buildFailure(configFor(url, app))
            expect(WardenError.fromSqlError(error)?.reason, `${url}: ${error.message}`).toBe("InvalidConfig")
            yield* noBackends(app)
          }
        }),
      20_000
    )

    it.live(
      "nonexistent database: 3D000",
      () =>
        Effect.gen(function* () {
          const app = uniqueAppName("err-nodb")
          const error = yield* buildFailure(
            configFor(
              withUrl(databaseUrl, (u) => {
                u.pathname = "/warden_no_such_database"
              }),
              app
            )
          )
          expect(WardenError.fromSqlError(error)?.reason).toBe("ConnectFailed")
          expect(WardenError.sqlState(error)).toBe("3D000")
          yield* noBackends(app)
        }),
      20_000
    )

    it.live(
      "maxConnections 0 and minConnections > maxConnections: InvalidConfig",
      () =>
        Effect.gen(function* () {
          const configs: Array<Partial<WardenClient.WardenClientConfig>> = [
            { maxConnections: 0 },
            { maxConnections: 2, minConnections: 3 }
          ]
          for (const extra of configs) {
            const app = uniqueAppName("err-config")
            const error = yield* buildFailure(configFor(databaseUrl, app, extra))
            expect(WardenError.fromSqlError(error)?.reason, `${safeJson(extra)}: ${error.message}`).toBe(
              "InvalidConfig"
            )
            yield* noBackends(app)
          }
        }),
      20_000
    )
  })
})
