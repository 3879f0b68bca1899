/**
 * Engine methods that ChatSession calls and users do not: keyed by symbols that only the engine's
 * own modules import (index.ts does not export them).
 */
export const SESSION_TURN: unique symbol = Symbol('tessera.sessionTurn');
export const SESSION_CLOSE: unique symbol = Symbol('tessera.sessionClose');
