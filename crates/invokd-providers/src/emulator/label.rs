//! Captions drawn onto emulated images (the prompt, the model, "emulator"), so a person
//! looking at a gallery of them knows which request made which picture.
//!
//! An 8x8 bitmap font (`font8x8`, public domain) scaled by whole pixels stays sharp at any
//! size and needs no font file; the text sits on a dark band so it reads on any background.

use font8x8::{BASIC_FONTS, UnicodeFonts};
use image::{Rgb, RgbImage};

/// Glyph cells are 8 pixels; lines get one pixel of the scale's spacing above and below.
const CELL: u32 = 8;

/// The scale that keeps about 40 characters on a line, and never below 1.
fn scale_for(width: u32) -> u32 {
    (width / (CELL * 40)).max(1)
}

/// `text` broken into lines of at most `per_line` characters, at spaces where it can.
fn wrap(text: &str, per_line: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > per_line {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word.drain(..per_line).collect());
        }
        let word: String = word.into_iter().collect();
        let needed = line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
        if needed > per_line && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Draws the caption along the bottom of `img`: the prompt's lines (as many as fit in half the
/// height, the last ending in "..." when cut), then `model · emulator`.
pub(super) fn caption(img: &mut RgbImage, prompt: &str, model: &str) {
    let (w, h) = img.dimensions();
    let scale = scale_for(w);
    let line_h = (CELL + 2) * scale;
    let per_line = (w.saturating_sub(2 * scale) / (CELL * scale)) as usize;
    let max_lines = (h / 2 / line_h) as usize;
    if per_line == 0 || max_lines == 0 {
        return;
    }
    let footer = format!("{model} - emulator");
    let mut lines = wrap(&footer, per_line);
    let room = max_lines.saturating_sub(lines.len());
    let mut text = wrap(prompt, per_line);
    if text.len() > room {
        text.truncate(room);
        if let Some(last) = text.last_mut() {
            let keep = per_line.saturating_sub(3).min(last.chars().count());
            *last = last.chars().take(keep).collect::<String>() + "...";
        }
    }
    text.append(&mut lines);
    text.truncate(max_lines);
    let top = h - line_h * text.len() as u32;
    for y in top..h {
        for x in 0..w {
            let p = img.get_pixel_mut(x, y);
            p.0 = p.0.map(|c| c / 4);
        }
    }
    for (i, line) in text.iter().enumerate() {
        let y = top + i as u32 * line_h + scale;
        for (j, ch) in line.chars().enumerate() {
            glyph(img, scale + j as u32 * CELL * scale, y, scale, ch);
        }
    }
}

/// One character at (x, y), each of its pixels a `scale`-sided square; unknown ones as '?'.
fn glyph(img: &mut RgbImage, x: u32, y: u32, scale: u32, ch: char) {
    let rows = BASIC_FONTS
        .get(ch)
        .or_else(|| BASIC_FONTS.get('?'))
        .unwrap_or([0; 8]);
    for (row, bits) in rows.iter().enumerate() {
        for col in 0..CELL {
            if bits & (1 << col) == 0 {
                continue;
            }
            for dy in 0..scale {
                for dx in 0..scale {
                    let (px, py) = (x + col * scale + dx, y + row as u32 * scale + dy);
                    if px < img.width() && py < img.height() {
                        img.put_pixel(px, py, Rgb([255, 255, 255]));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_wrap_at_spaces_and_long_words_are_cut() {
        assert_eq!(wrap("a cat on a mat", 6), ["a cat", "on a", "mat"]);
        assert_eq!(wrap("abcdefgh", 3), ["abc", "def", "gh"]);
        assert!(wrap("   ", 5).is_empty());
    }

    /// White pixels: the caption's, as the darkened band holds nothing else that bright.
    fn white(img: &RgbImage) -> usize {
        img.pixels().filter(|p| p.0 == [255, 255, 255]).count()
    }

    #[test]
    fn the_caption_is_drawn_at_every_size_inside_the_image() {
        for (w, h) in [(16, 16), (64, 48), (512, 512), (1344, 768), (300, 2000)] {
            let mut img = RgbImage::from_pixel(w, h, Rgb([250, 250, 250]));
            caption(&mut img, "a lighthouse in a storm", "fal-ai/flux/schnell");
            assert_eq!(img.dimensions(), (w, h));
            if h >= 20 && w >= 10 {
                assert!(white(&img) > 0, "{w}x{h}: no caption");
            }
        }
    }

    #[test]
    fn glyphs_grow_with_the_image() {
        assert_eq!(scale_for(320), 1);
        assert_eq!(scale_for(1024), 3);
        let mut small = RgbImage::new(320, 240);
        let mut big = RgbImage::new(1280, 960);
        caption(&mut small, "x", "m");
        caption(&mut big, "x", "m");
        assert_eq!(
            white(&big),
            white(&small) * 16,
            "4x the scale, 16x the pixels"
        );
    }
}
