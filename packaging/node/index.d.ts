/** The absolute path of the extension library (for `db.loadExtension(path)`). */
export function getLoadablePath(): string;

/** Loads the extension into `db` (anything with better-sqlite3's `loadExtension(path)`). */
export function load(db: { loadExtension(path: string): unknown }): void;

declare const _default: { getLoadablePath: typeof getLoadablePath; load: typeof load };
export default _default;
