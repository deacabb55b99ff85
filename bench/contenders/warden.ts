/** pg-warden: `WardenClient.layer` with the pool size and application name of the run, defaults otherwise. */
import * as Redacted from "effect/Redacted"
import { WardenClient } from "../../src/index.js"
import { makeEffect3Adapter } from "./effect3.js"
import { packageVersion } from "./versions.js"

export const adapter = makeEffect3Adapter({
  name: "pg-warden",
  versions: {
    "pg-warden": packageVersion("pg-warden", "../.."),
    effect: packageVersion("effect"),
    "@effect/sql": packageVersion("@effect/sql"),
    pg: packageVersion("pg")
  },
  layer: (args) =>
    WardenClient.layer({
      url: Redacted.make(args.url),
      maxConnections: args.poolSize,
      applicationName: args.appName
    })
})
