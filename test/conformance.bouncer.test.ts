/**
 * The conformance suite (test/conformance/cases.ts) against pg-warden through a real PgBouncer in transaction mode
 * (test/support/pgbouncer.ts): every case must pass. The admin connection reads the server itself.
 */
import * as Redacted from "effect/Redacted"
import { describe, inject, it } from "vitest"
import * as WardenClient from "../src/WardenClient.js"
import { cases, runCase, testName } from "./conformance/cases.js"
import { contender } from "./conformance/effect3.js"
import "./support/context.js"

const serverUrl = inject("databaseUrl")
const bouncerUrl = inject("bouncerUrl")
const through = { serverUrl, adminUrl: inject("bouncerAdminUrl") }
const skipped = bouncerUrl === "" ? ` (skipped: ${inject("bouncerSkipped")})` : ""

const warden = contender("warden", (url, app, options) =>
  WardenClient.layer({
    url: Redacted.make(url),
    applicationName: app,
    maxConnections: options.maxConnections,
    acquireTimeout: options.acquireTimeoutMs,
    pgbouncer: true
  })
)

describe.skipIf(bouncerUrl === "")(`conformance through PgBouncer: pg-warden${skipped}`, () => {
  for (const testCase of cases) {
    it(testName(testCase), () => runCase(testCase, warden, bouncerUrl, "pgb-", through), 60_000)
  }
})
