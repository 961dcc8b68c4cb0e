//! Emulated images: a deterministic pattern from the seed and prompt, at exactly the requested
//! size, count and format.

use std::io::Cursor;

use image::{ImageFormat, RgbImage};
use invokd_core::{
    catalog::{CountSpec, ImagesSpec, Model, SizeSpec},
    provider::ProviderError,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::File;

fn bad(msg: String) -> ProviderError {
    ProviderError::permanent("bad_request", msg)
}

/// The pixel size the input asks for (the catalog's one reading of it).
pub(super) fn size(
    spec: &SizeSpec,
    input: &Map<String, Value>,
) -> Result<(u32, u32), ProviderError> {
    spec.pixels(input).map_err(bad)
}

fn count(spec: &CountSpec, input: &Map<String, Value>) -> u32 {
    match spec {
        CountSpec::Fixed(n) => *n,
        CountSpec::Field(f) => input
            .get(f)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1),
    }
    .max(1)
}

fn format(
    spec: &ImagesSpec,
    input: &Map<String, Value>,
) -> Result<(ImageFormat, &'static str, &'static str), ProviderError> {
    let name = spec
        .format
        .field
        .as_ref()
        .and_then(|f| input.get(f))
        .and_then(Value::as_str)
        .unwrap_or(&spec.format.default);
    match name {
        "jpeg" | "jpg" => Ok((ImageFormat::Jpeg, "jpeg", "image/jpeg")),
        "png" => Ok((ImageFormat::Png, "png", "image/png")),
        "webp" => Ok((ImageFormat::WebP, "webp", "image/webp")),
        other => Err(bad(format!("the emulator cannot write {other:?} images"))),
    }
}

/// Three colours and a few circle centres from the seed and prompt.
fn palette(seed: u64, prompt: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(prompt.as_bytes());
    h.finalize().into()
}

fn draw(w: u32, h: u32, p: &[u8; 32]) -> RgbImage {
    let c = |i: usize| [f32::from(p[i]), f32::from(p[i + 1]), f32::from(p[i + 2])];
    let (a, b, dot) = (c(0), c(3), c(6));
    let circles: Vec<(f32, f32, f32)> = (0..4)
        .map(|k| {
            let x = f32::from(p[9 + 3 * k]) / 255.0 * w as f32;
            let y = f32::from(p[10 + 3 * k]) / 255.0 * h as f32;
            let r = (0.05 + f32::from(p[11 + 3 * k]) / 255.0 * 0.2) * w.min(h) as f32;
            (x, y, r * r)
        })
        .collect();
    let diag = (w + h).max(1) as f32;
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let t = (fx + fy) / diag;
        let inside = circles
            .iter()
            .any(|(cx, cy, r2)| (fx - cx).powi(2) + (fy - cy).powi(2) <= *r2);
        let px = |i: usize| {
            let base = a[i] * (1.0 - t) + b[i] * t;
            (if inside { (base + dot[i]) / 2.0 } else { base }) as u8
        };
        image::Rgb([px(0), px(1), px(2)])
    })
}

pub(super) fn render(
    model: &Model,
    input: &Map<String, Value>,
    seed: u64,
    max_pixels: u64,
) -> Result<(Vec<File>, String), ProviderError> {
    let Some(spec) = &model.output.images else {
        return Err(bad(format!("{} has no image output", model.id)));
    };
    let (w, h) = size(&spec.size, input)?;
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(bad(format!(
            "the emulator refuses images over {max_pixels} pixels ({w}x{h} requested)"
        )));
    }
    let n = count(&spec.count, input);
    let (fmt, ext, content_type) = format(spec, input)?;
    let prompt = input
        .get("prompt")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut files = Vec::with_capacity(n as usize);
    for i in 0..n {
        let img = draw(w, h, &palette(seed.wrapping_add(u64::from(i)), prompt));
        let mut bytes = Cursor::new(Vec::new());
        img.write_to(&mut bytes, fmt).map_err(|e| {
            ProviderError::transient("internal_error", format!("encoding failed: {e}"))
        })?;
        files.push(File {
            name: format!("{i}.{ext}"),
            bytes: bytes.into_inner(),
            content_type,
            width: Some(w),
            height: Some(h),
        });
    }
    Ok((files, format!("{n} {ext} image(s) of {w}x{h}")))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    #[test]
    fn sizes_follow_presets_objects_and_ratios() {
        let field = SizeSpec::Field {
            field: "image_size".into(),
        };
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            size(&field, &m(json!({"image_size": "landscape_4_3"}))).unwrap(),
            (1024, 768)
        );
        assert_eq!(
            size(
                &field,
                &m(json!({"image_size": {"width": 300, "height": 200}}))
            )
            .unwrap(),
            (300, 200)
        );
        assert!(size(&field, &m(json!({"image_size": "huge"}))).is_err());
        let ratios = SizeSpec::Ratios {
            field: "aspect_ratio".into(),
            ratios: BTreeMap::from([("16:9".to_string(), [1344, 768])]),
        };
        assert_eq!(
            size(&ratios, &m(json!({"aspect_ratio": "16:9"}))).unwrap(),
            (1344, 768)
        );
    }

    #[test]
    fn drawing_is_deterministic_and_seed_dependent() {
        let a = draw(64, 48, &palette(1, "cat"));
        assert_eq!(a, draw(64, 48, &palette(1, "cat")));
        assert_ne!(a, draw(64, 48, &palette(2, "cat")));
        assert_eq!(a.dimensions(), (64, 48));
    }
}
