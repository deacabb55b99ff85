/**
 * pg-warden through PgBouncer in transaction mode (`pgbouncer: true`), next to `pgBouncer` (raw pg through the same
 * PgBouncer) and the direct contenders, to measure what PgBouncer costs. Run only when named:
 * `npm run bench -- --contenders warden,wardenBouncer,pg,pgBouncer`.
 */
import { wardenAdapter } from "./warden.js"

export const adapter = wardenAdapter("pg-warden through PgBouncer", { pgbouncer: true })
