/**
 * The periodic audit (issue #11) on the Effect 4 edition: `auditInterval` logs a warning, through effect 4's
 * logger, naming a backend under the pool's name that the pool does not hold (its PID from the server).
 * The audit by PID itself is the core's, tested through the Effect 3 edition (../../test/audit.test.ts).
 */
import { describe, expect, inject, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Redacted from "effect/Redacted"
import * as SqlClient from "effect/sql/SqlClient"
import pg from "pg"
import { uniqueAppName } from "../../test/support/admin.js"
import * as WardenClient from "../src/WardenClient.js"
import "./context.js"

const url = inject("databaseUrl")

describe("audit (Effect 4)", () => {
  it.live("auditInterval logs a warning naming a backend under the pool's name that the pool does not hold", () => {
    const app = uniqueAppName("e4-audit-periodic")
    const warnings: Array<string> = []
    const logger = Logger.make<unknown, void>(({ logLevel, message }) => {
      if (logLevel === "Warn") warnings.push((Array.isArray(message) ? message : [message]).map(String).join(" "))
    })
    return Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      yield* sql`select 1`
      const stranger = new pg.Client({ connectionString: url, application_name: app })
      yield* Effect.acquireRelease(
        Effect.promise(() => stranger.connect()),
        () => Effect.promise(() => stranger.end())
      )
      const rows = (yield* Effect.promise(() => stranger.query<{ pid: number }>("select pg_backend_pid() as pid"))).rows
      const pid = rows[0]!.pid
      for (let i = 0; !warnings.some((w) => w.includes("does not hold") && w.includes(String(pid))); i++) {
        if (i > 200) return yield* Effect.die(new Error(`no audit warning for ${pid}: ${JSON.stringify(warnings)}`))
        yield* Effect.sleep("25 millis")
      }
      expect(warnings.some((w) => w.includes(`pg-warden audit of ${app}`))).toBe(true)
    }).pipe(
      Effect.scoped,
      Effect.provide(
        WardenClient.layer({
          url: Redacted.make(url),
          applicationName: app,
          maxConnections: 1,
          auditInterval: 200
        }).pipe(Layer.provide(Logger.layer([logger])))
      )
    )
  })
})
