/**
 * pg-warden with its observability on (`metrics: true`, `leakDetectionThreshold`), next to the plain
 * `warden` contender, to measure what metrics and leak detection cost. Run only when named:
 * `npm run bench -- --contenders warden,wardenObserved,pg`.
 */
import * as Redacted from "effect/Redacted"
import { WardenClient } from "../../src/index.js"
import { makeEffect3Adapter } from "./effect3.js"
import { packageVersion } from "./versions.js"

export const adapter = makeEffect3Adapter({
  name: "pg-warden, metrics + leak detection",
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
      metrics: true,
      // Long enough that no lease of the benchmark is reported: what is measured is the bookkeeping.
      leakDetectionThreshold: "60 seconds"
    })
})
