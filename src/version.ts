// Kept in step with package.json by a test; read without touching the disk on the fast path.
export const VERSION = '0.1.0';
