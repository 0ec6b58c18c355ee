//! QR rendering: the raw pairing string as an SVG and a PNG data URL (seed 003's `qrDataUrl`).

use base64::Engine as _;
use qrcode::QrCode;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("qr encode: {0}")]
    Encode(#[from] qrcode::types::QrError),
    #[error("png encode: {0}")]
    Png(#[from] image::ImageError),
}

/// The three forms of one QR code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderedQr {
    pub qr: String,
    pub qr_svg: String,
    pub qr_data_url: String,
}

pub fn render(code: &str) -> Result<RenderedQr, QrError> {
    let qr = QrCode::new(code.as_bytes())?;
    let svg = qr
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .build();
    let img = qr
        .render::<image::Luma<u8>>()
        .module_dimensions(4, 4)
        .build();
    let mut png = Vec::new();
    image::DynamicImage::ImageLuma8(img)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(RenderedQr {
        qr: code.to_owned(),
        qr_svg: svg,
        qr_data_url: format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&png)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_svg_and_png_data_url() {
        let r = render("2@abc,def,ghi,jkl").unwrap();
        assert!(r.qr_svg.contains("<svg"));
        let b64 = r
            .qr_data_url
            .strip_prefix("data:image/png;base64,")
            .unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
