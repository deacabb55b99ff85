/** pg-warden: `WardenClient.layer` with the pool size and application name of the run, defaults otherwise. */
import * as Redacted from "effect/Redacted"
import { WardenClient } from "../../src/index.js"
import { makeEffect3Adapter } from "./effect3.js"
import { packageVersion } from "./versions.js"

/** A pg-warden contender named `name`, with `options` on top of the run's pool size and application name. */
export const wardenAdapter = (name: string, options: Partial<WardenClient.WardenClientConfig> = {}) =>
  makeEffect3Adapter({
    name,
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
        applicationName: args.appName,
        ...options
      })
  })

export const adapter = wardenAdapter("pg-warden")
