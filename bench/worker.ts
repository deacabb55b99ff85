/**
 * One contender's worker process (Effect 3 and promise-based contenders): `node --import tsx
 * bench/worker.ts <contender>`. It speaks the line protocol of lib/worker-core.mjs with bench/run.ts,
 * so that each contender runs in a process of its own (no shared heap, GC or JIT state) and the
 * rounds can still interleave. The Effect 4 contenders have their own worker in bench/effect4/.
 */
import type { ContenderAdapter } from "./lib/worker-core.mjs"
import { serve } from "./lib/worker-core.mjs"

const contenders: Record<string, () => Promise<{ adapter: ContenderAdapter }>> = {
  warden: () => import("./contenders/warden.js"),
  wardenObserved: () => import("./contenders/warden-observed.js"),
  sqlpg: () => import("./contenders/sqlpg.js"),
  pg: () => import("./contenders/pg.js"),
  wardenBouncer: () => import("./contenders/warden-bouncer.js"),
  // Raw pg needs nothing different through PgBouncer: it sends no startup options and prepares nothing by name.
  pgBouncer: () => import("./contenders/pg.js"),
  postgresjs: () => import("./contenders/postgresjs.js")
}

const name = process.argv[2] ?? ""
const load = contenders[name]
if (load === undefined) {
  console.error(`usage: worker.ts <${Object.keys(contenders).join("|")}>`)
  process.exit(2)
}
serve((await load()).adapter)
