/** Text-generation metrics: BLEU (sacreBLEU-compatible) and ROUGE-L (rouge-score-compatible, with NLTK's Porter stemmer). Pure functions. */
export { bleuTokens, corpusBleu, sentenceBleu, tokenize13a, type BleuOptions, type BleuScore, type BleuSmooth, type BleuTokenize } from './bleu.js';
export { corpusRougeL, rougeL, rougeLMulti, rougeTokenize, lcsLength, type RougeOptions, type RougeScore } from './rouge.js';
export { porterStem } from './porter.js';
