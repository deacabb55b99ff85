import type { TestProject } from "vitest/node"
import { redactUrl } from "./context.js"
import { startPrivateServer } from "./embedded.js"
import { startBouncer } from "./pgbouncer.js"

/** PgBouncer in front of the test server, for the suites that run through it (or why there is none). */
const provideBouncer = async (project: TestProject, url: string): Promise<() => Promise<void>> => {
  const bouncer = await startBouncer(url)
  if ("skipped" in bouncer) {
    project.provide("bouncerUrl", "")
    project.provide("bouncerAdminUrl", "")
    project.provide("bouncerSkipped", bouncer.skipped)
    process.stderr.write(`[pg-warden tests] PgBouncer suites skipped: ${bouncer.skipped}\n`)
    return async () => {}
  }
  project.provide("bouncerUrl", bouncer.url)
  project.provide("bouncerAdminUrl", bouncer.adminUrl)
  project.provide("bouncerSkipped", "")
  process.stderr.write(`[pg-warden tests] ${bouncer.version} (transaction mode) at ${redactUrl(bouncer.url)}\n`)
  return bouncer.dispose
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const external = process.env.DATABASE_URL
  if (external !== undefined && external !== "") {
    project.provide("databaseUrl", external)
    project.provide("serverKind", "external")
    process.stderr.write(`[pg-warden tests] using external PostgreSQL from DATABASE_URL: ${redactUrl(external)}\n`)
    return provideBouncer(project, external)
  }

  const server = await startPrivateServer()
  project.provide("databaseUrl", server.url)
  project.provide("serverKind", "embedded")
  process.stderr.write(`[pg-warden tests] using embedded PostgreSQL: ${redactUrl(server.url)}\n`)
  const stopBouncer = await provideBouncer(project, server.url).catch(async (error: unknown) => {
    await server.dispose()
    throw error
  })
  return async () => {
    await stopBouncer()
    await server.dispose()
  }
}
