/**
 * pg-warden for Effect 4: a PostgreSQL connection never outlives its scope.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as WardenClient from "./WardenClient.js"
/**
 * @since 0.1.0
 */
export * as WardenError from "./WardenError.js"
/**
 * @since 0.1.0
 */
export * as WardenPool from "./WardenPool.js"
