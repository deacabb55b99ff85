import type { TestProject } from "vitest/node"
import { redactUrl } from "./context.js"
import { startPrivateServer } from "./embedded.js"

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const external = process.env.DATABASE_URL
  if (external !== undefined && external !== "") {
    project.provide("databaseUrl", external)
    project.provide("serverKind", "external")
    process.stderr.write(`[pg-warden tests] using external PostgreSQL from DATABASE_URL: ${redactUrl(external)}\n`)
    return async () => {}
  }

  const server = await startPrivateServer()
  project.provide("databaseUrl", server.url)
  project.provide("serverKind", "embedded")
  process.stderr.write(`[pg-warden tests] using embedded PostgreSQL: ${redactUrl(server.url)}\n`)
  return () => server.dispose()
}
