/**
 * The conformance suite (../test/conformance/cases.ts, written once for both editions) against pg-warden's Effect 4
 * edition: every case must pass.
 */
import * as Redacted from "effect/Redacted"
import { describe, inject, it } from "vitest"
import { cases, runCase, testName } from "../../test/conformance/cases.js"
import * as WardenClient from "../src/WardenClient.js"
import { contender } from "./conformance/effect4.js"
import "./context.js"

const url = inject("databaseUrl")

const warden = contender("warden", (url, app, options) =>
  WardenClient.layer({
    url: Redacted.make(url),
    applicationName: app,
    maxConnections: options.maxConnections,
    acquireTimeout: options.acquireTimeoutMs
  })
)

describe("conformance (Effect 4): pg-warden", () => {
  for (const testCase of cases) {
    it(testName(testCase), () => runCase(testCase, warden, url, "e4-"), 60_000)
  }
})
