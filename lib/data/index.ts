/**
 * lib/data: datasets for ControlNet training (see dataset.ts for createDataset and its options).
 */
export { createDataset, normalizeDatasetOptions, ControlNetDataset } from "./dataset.js";
export type { DatasetOptions, BatchLoader, LoaderSettings } from "./dataset.js";
export { DataLoader, checkProportionEmptyPrompts } from "./loader.js";
export { WorkerDataLoader } from "./worker-loader.js";
export type { Batch, LoaderOptions, LoaderPosition, SkippedRow } from "./loader.js";
export { SyntheticFill50k, syntheticTruth, renderOutline, renderFilled, outlineWidth } from "./synthetic.js";
export type { CircleTruth, SyntheticOptions, SyntheticRow } from "./synthetic.js";
export { CSS_COLORS, lookupColor, parseFillPrompt, fillPrompt } from "./colors.js";
export type { NamedColor, ParsedFillPrompt } from "./colors.js";
export { VALIDATION_PROMPTS, renderValidationImages, writeValidationImages, staleValidationImages } from "./validation.js";
export { checkResolution, resizeCenterCrop, imageTransform, conditioningImageTransform, toFloat, resizedSize, centerCropOffsets } from "./transforms.js";
export { decodeRgb, encodePng } from "./image.js";
export { writeArrowDataset, iterateArrowRows, ArrowTable, ArrowStreamTable, openArrow } from "./sources/arrow.js";
export { ParquetTable, findParquetFiles } from "./sources/parquet.js";
export { JsonlTable, parseJsonLines } from "./sources/folder.js";
export { ZipArchive } from "./sources/zip.js";
export { openLocalTable } from "./sources/local.js";
export { TableSource, SubsetSource, ConcatTable, resolveColumns } from "./sources/table.js";
export type { Table } from "./sources/table.js";
export { BadRowError, isRawImage } from "./types.js";
export type { DataSource, DatasetRow, ImageValue, RawImage, ColumnOptions } from "./types.js";
