/** Text-generation metrics: BLEU (sacreBLEU-compatible) and ROUGE-L (rouge-score-compatible). Pure functions. */
export { bleuTokens, corpusBleu, sentenceBleu, tokenize13a, type BleuOptions, type BleuScore, type BleuSmooth, type BleuTokenize } from './bleu.js';
export { corpusRougeL, rougeL, rougeLMulti, rougeTokenize, lcsLength, type RougeScore } from './rouge.js';
