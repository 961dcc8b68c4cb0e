//! Previews of a streaming model's images, as a diffusion model shows its steps: each final
//! image at a coarser resolution (an eighth of its size, then a quarter, then a half), scaled
//! back up to the requested size, so every preview has the final size and refines step by step.
//! They are made from the final files, so they show whatever the final images show.

use std::io::Cursor;

use ::image::{
    ImageFormat, RgbImage,
    imageops::{self, FilterType},
};
use invokd_core::provider::ProviderError;

/// Previews sent before the final files.
pub(super) const STEPS: u32 = 3;

/// How much coarser than the final image the preview of `step` (1 to `STEPS`) is.
fn coarseness(step: u32) -> u32 {
    1 << (STEPS + 1 - step.clamp(1, STEPS))
}

/// The preview of `step` (1 to `STEPS`) of an encoded final image: a JPEG of the same size.
pub(super) fn preview(final_image: &[u8], step: u32) -> Result<Vec<u8>, ProviderError> {
    let failed = |e: ::image::ImageError| {
        ProviderError::transient("internal_error", format!("making a preview failed: {e}"))
    };
    let full: RgbImage = ::image::load_from_memory(final_image)
        .map_err(failed)?
        .to_rgb8();
    let (w, h) = full.dimensions();
    let by = coarseness(step);
    let coarse = imageops::resize(
        &full,
        (w / by).max(1),
        (h / by).max(1),
        FilterType::Triangle,
    );
    let shown = imageops::resize(&coarse, w, h, FilterType::Nearest);
    let mut bytes = Cursor::new(Vec::new());
    shown
        .write_to(&mut bytes, ImageFormat::Jpeg)
        .map_err(failed)?;
    Ok(bytes.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A final image with detail at several scales: waves of a few periods.
    fn detailed(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32, y as f32);
            let v = |a: f32, b: f32| (128.0 + 60.0 * (fx / a).sin() + 60.0 * (fy / b).sin()) as u8;
            ::image::Rgb([v(3.0, 5.0), v(7.0, 2.0), v(11.0, 13.0)])
        })
    }

    fn encoded(img: &RgbImage) -> Vec<u8> {
        let mut bytes = Cursor::new(Vec::new());
        img.write_to(&mut bytes, ImageFormat::Png).unwrap();
        bytes.into_inner()
    }

    /// The mean difference of two images of one size, per channel.
    fn distance(a: &RgbImage, b: &RgbImage) -> f64 {
        let total: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(p, q)| u64::from(p.abs_diff(*q)))
            .sum();
        total as f64 / a.as_raw().len() as f64
    }

    #[test]
    fn previews_have_the_final_size_and_come_closer_to_it_step_by_step() {
        let (w, h) = (96, 64);
        let full = detailed(w, h);
        let source = encoded(&full);
        let mut distances = Vec::new();
        for step in 1..=STEPS {
            let bytes = preview(&source, step).unwrap();
            assert_eq!(::image::guess_format(&bytes).unwrap(), ImageFormat::Jpeg);
            let img = ::image::load_from_memory(&bytes).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (w, h), "step {step}");
            distances.push(distance(&img, &full));
        }
        assert!(
            distances.windows(2).all(|d| d[0] > d[1]),
            "each step is closer to the final image: {distances:?}"
        );
        assert!(distances[0] > 10.0, "the first is coarse: {distances:?}");
    }

    #[test]
    fn coarseness_halves_each_step() {
        assert_eq!(
            (1..=STEPS).map(coarseness).collect::<Vec<_>>(),
            vec![8, 4, 2]
        );
    }
}
