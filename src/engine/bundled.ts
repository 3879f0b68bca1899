/**
 * The model that ships with tessera: Andrej Karpathy's stories260K (a 260K-parameter Llama trained
 * on TinyStories; MIT), so the API and the CLI run with no download. It is a toy: whatever it is
 * asked, it writes a children's story.
 */
import { fileURLToPath } from 'node:url';

/** Absolute path of the bundled stories260K GGUF (from src/engine and dist/engine alike). */
export const bundledModelPath: string = fileURLToPath(new URL('../../models/stories260K/stories260K.gguf', import.meta.url));
