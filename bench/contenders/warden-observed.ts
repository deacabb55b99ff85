/**
 * pg-warden with its observability on (`metrics: true`, `leakDetectionThreshold`), next to the plain
 * `warden` contender, to measure what metrics and leak detection cost. Run only when named:
 * `npm run bench -- --contenders warden,wardenObserved,pg`.
 */
import { wardenAdapter } from "./warden.js"

export const adapter = wardenAdapter("pg-warden, metrics + leak detection", {
  metrics: true,
  // Long enough that no lease of the benchmark is reported: what is measured is the bookkeeping.
  leakDetectionThreshold: "60 seconds"
})
