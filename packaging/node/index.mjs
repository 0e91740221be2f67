// ESM entry: the same functions as index.cjs.
import cjs from './index.cjs';

export const { getLoadablePath, load } = cjs;
export default cjs;
