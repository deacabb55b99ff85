/**
 * Values handed from `globalSetup.ts` to every test file via `project.provide` / `inject`.
 * Both sides import this module so the `ProvidedContext` augmentation is always in scope.
 */

export type ServerKind = "embedded" | "external"

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string
    serverKind: ServerKind
    /** PgBouncer (transaction mode) in front of the test server; "" when there is none (see `bouncerSkipped`). */
    bouncerUrl: string
    /** PgBouncer's admin console. */
    bouncerAdminUrl: string
    /** Why there is no PgBouncer (empty when there is one). */
    bouncerSkipped: string
  }
}

/** Same URL with the password (if any) replaced by `***`, for logs. */
export const redactUrl = (url: string): string => {
  try {
    const parsed = new URL(url)
    if (parsed.password !== "") parsed.password = "***"
    return parsed.toString()
  } catch {
    return "<unparseable database url>"
  }
}
