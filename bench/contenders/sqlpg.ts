/** @effect/sql-pg 0.53: `PgClient.layer` with the pool size and application name of the run, library defaults otherwise. */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Redacted from "effect/Redacted"
import { makeEffect3Adapter } from "./effect3.js"
import { packageVersion } from "./versions.js"

export const adapter = makeEffect3Adapter({
  name: "@effect/sql-pg 0.53",
  versions: {
    "@effect/sql-pg": packageVersion("@effect/sql-pg"),
    effect: packageVersion("effect"),
    "@effect/sql": packageVersion("@effect/sql"),
    pg: packageVersion("pg")
  },
  layer: (args) =>
    PgClient.layer({
      url: Redacted.make(args.url),
      maxConnections: args.poolSize,
      applicationName: args.appName
    })
})
