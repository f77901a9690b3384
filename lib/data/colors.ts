/**
 * The CSS named colours, spelled the way fill50k's prompts spell them: the CamelCase names of the common web colour
 * list split at capitals and lower-cased ("PaleGoldenRod" → "pale golden rod", "DarkSlateGray" → "dark slate gray",
 * "BurlyWood" → "burly wood"). All 148 CSS Color Module 4 names, including both gray/grey spellings and the
 * aqua/cyan and fuchsia/magenta aliases.
 */

export interface NamedColor {
  /** The prompt spelling: lower case, words separated by single spaces. */
  name: string;
  /** The CSS keyword (no spaces). */
  css: string;
  rgb: [number, number, number];
}

// CamelCase name → hex. The capitals mark the word breaks of fill50k's spelling.
const TABLE: ReadonlyArray<readonly [string, string]> = [
  ["AliceBlue", "f0f8ff"], ["AntiqueWhite", "faebd7"], ["Aqua", "00ffff"], ["Aquamarine", "7fffd4"],
  ["Azure", "f0ffff"], ["Beige", "f5f5dc"], ["Bisque", "ffe4c4"], ["Black", "000000"],
  ["BlanchedAlmond", "ffebcd"], ["Blue", "0000ff"], ["BlueViolet", "8a2be2"], ["Brown", "a52a2a"],
  ["BurlyWood", "deb887"], ["CadetBlue", "5f9ea0"], ["Chartreuse", "7fff00"], ["Chocolate", "d2691e"],
  ["Coral", "ff7f50"], ["CornflowerBlue", "6495ed"], ["Cornsilk", "fff8dc"], ["Crimson", "dc143c"],
  ["Cyan", "00ffff"], ["DarkBlue", "00008b"], ["DarkCyan", "008b8b"], ["DarkGoldenRod", "b8860b"],
  ["DarkGray", "a9a9a9"], ["DarkGrey", "a9a9a9"], ["DarkGreen", "006400"], ["DarkKhaki", "bdb76b"],
  ["DarkMagenta", "8b008b"], ["DarkOliveGreen", "556b2f"], ["DarkOrange", "ff8c00"], ["DarkOrchid", "9932cc"],
  ["DarkRed", "8b0000"], ["DarkSalmon", "e9967a"], ["DarkSeaGreen", "8fbc8f"], ["DarkSlateBlue", "483d8b"],
  ["DarkSlateGray", "2f4f4f"], ["DarkSlateGrey", "2f4f4f"], ["DarkTurquoise", "00ced1"], ["DarkViolet", "9400d3"],
  ["DeepPink", "ff1493"], ["DeepSkyBlue", "00bfff"], ["DimGray", "696969"], ["DimGrey", "696969"],
  ["DodgerBlue", "1e90ff"], ["FireBrick", "b22222"], ["FloralWhite", "fffaf0"], ["ForestGreen", "228b22"],
  ["Fuchsia", "ff00ff"], ["Gainsboro", "dcdcdc"], ["GhostWhite", "f8f8ff"], ["Gold", "ffd700"],
  ["GoldenRod", "daa520"], ["Gray", "808080"], ["Grey", "808080"], ["Green", "008000"],
  ["GreenYellow", "adff2f"], ["HoneyDew", "f0fff0"], ["HotPink", "ff69b4"], ["IndianRed", "cd5c5c"],
  ["Indigo", "4b0082"], ["Ivory", "fffff0"], ["Khaki", "f0e68c"], ["Lavender", "e6e6fa"],
  ["LavenderBlush", "fff0f5"], ["LawnGreen", "7cfc00"], ["LemonChiffon", "fffacd"], ["LightBlue", "add8e6"],
  ["LightCoral", "f08080"], ["LightCyan", "e0ffff"], ["LightGoldenRodYellow", "fafad2"], ["LightGray", "d3d3d3"],
  ["LightGrey", "d3d3d3"], ["LightGreen", "90ee90"], ["LightPink", "ffb6c1"], ["LightSalmon", "ffa07a"],
  ["LightSeaGreen", "20b2aa"], ["LightSkyBlue", "87cefa"], ["LightSlateGray", "778899"], ["LightSlateGrey", "778899"],
  ["LightSteelBlue", "b0c4de"], ["LightYellow", "ffffe0"], ["Lime", "00ff00"], ["LimeGreen", "32cd32"],
  ["Linen", "faf0e6"], ["Magenta", "ff00ff"], ["Maroon", "800000"], ["MediumAquaMarine", "66cdaa"],
  ["MediumBlue", "0000cd"], ["MediumOrchid", "ba55d3"], ["MediumPurple", "9370db"], ["MediumSeaGreen", "3cb371"],
  ["MediumSlateBlue", "7b68ee"], ["MediumSpringGreen", "00fa9a"], ["MediumTurquoise", "48d1cc"], ["MediumVioletRed", "c71585"],
  ["MidnightBlue", "191970"], ["MintCream", "f5fffa"], ["MistyRose", "ffe4e1"], ["Moccasin", "ffe4b5"],
  ["NavajoWhite", "ffdead"], ["Navy", "000080"], ["OldLace", "fdf5e6"], ["Olive", "808000"],
  ["OliveDrab", "6b8e23"], ["Orange", "ffa500"], ["OrangeRed", "ff4500"], ["Orchid", "da70d6"],
  ["PaleGoldenRod", "eee8aa"], ["PaleGreen", "98fb98"], ["PaleTurquoise", "afeeee"], ["PaleVioletRed", "db7093"],
  ["PapayaWhip", "ffefd5"], ["PeachPuff", "ffdab9"], ["Peru", "cd853f"], ["Pink", "ffc0cb"],
  ["Plum", "dda0dd"], ["PowderBlue", "b0e0e6"], ["Purple", "800080"], ["RebeccaPurple", "663399"],
  ["Red", "ff0000"], ["RosyBrown", "bc8f8f"], ["RoyalBlue", "4169e1"], ["SaddleBrown", "8b4513"],
  ["Salmon", "fa8072"], ["SandyBrown", "f4a460"], ["SeaGreen", "2e8b57"], ["SeaShell", "fff5ee"],
  ["Sienna", "a0522d"], ["Silver", "c0c0c0"], ["SkyBlue", "87ceeb"], ["SlateBlue", "6a5acd"],
  ["SlateGray", "708090"], ["SlateGrey", "708090"], ["Snow", "fffafa"], ["SpringGreen", "00ff7f"],
  ["SteelBlue", "4682b4"], ["Tan", "d2b48c"], ["Teal", "008080"], ["Thistle", "d8bfd8"],
  ["Tomato", "ff6347"], ["Turquoise", "40e0d0"], ["Violet", "ee82ee"], ["Wheat", "f5deb3"],
  ["White", "ffffff"], ["WhiteSmoke", "f5f5f5"], ["Yellow", "ffff00"], ["YellowGreen", "9acd32"],
];

/** "PaleGoldenRod" → "pale golden rod". */
function spaced(camel: string): string {
  return camel.replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
}

export const CSS_COLORS: readonly NamedColor[] = TABLE.map(([camel, hex]) => ({
  name: spaced(camel),
  css: camel.toLowerCase(),
  rgb: [parseInt(hex.slice(0, 2), 16), parseInt(hex.slice(2, 4), 16), parseInt(hex.slice(4, 6), 16)],
}));

const BY_KEY = new Map<string, NamedColor>();
for (const c of CSS_COLORS) {
  BY_KEY.set(c.name, c);
  BY_KEY.set(c.css, c);
}

/** Looks a colour up by its spaced spelling or CSS keyword, case- and whitespace-insensitively. */
export function lookupColor(name: string): NamedColor | undefined {
  const norm = name.trim().toLowerCase().replace(/\s+/g, " ");
  return BY_KEY.get(norm) ?? BY_KEY.get(norm.replace(/ /g, ""));
}

export interface ParsedFillPrompt {
  /** The circle's colour, or null when the words before "circle" are not a known colour name. */
  fill: NamedColor | null;
  /** The background colour, or null when unknown (e.g. "brown floral" in the seed's second validation prompt). */
  background: NamedColor | null;
  /** The raw words, whether or not they named a colour. */
  fillText: string;
  backgroundText: string;
}

/**
 * Parses a fill50k prompt "<A> circle with <B> background" into its two colours. Returns null when the text does not
 * have that shape at all (an empty prompt, another dataset's caption).
 */
export function parseFillPrompt(text: string): ParsedFillPrompt | null {
  const m = /^\s*(.+?)\s+circle\s+with\s+(?:an?\s+)?(.+?)\s+background\s*[.!]?\s*$/i.exec(text);
  if (!m) return null;
  const fillText = m[1]!.toLowerCase().replace(/\s+/g, " ");
  const backgroundText = m[2]!.toLowerCase().replace(/\s+/g, " ");
  return { fill: lookupColor(fillText) ?? null, background: lookupColor(backgroundText) ?? null, fillText, backgroundText };
}

/** The fill50k prompt for two colours. */
export function fillPrompt(fill: NamedColor, background: NamedColor): string {
  return `${fill.name} circle with ${background.name} background`;
}
