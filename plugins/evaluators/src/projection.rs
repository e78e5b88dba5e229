//! Mapping embeddings to the plane for plotting: the code itself when it is 2-D, otherwise its
//! first two principal components.

use pretext_plugin_api::tch::{Kind, Tensor};
use pretext_plugin_api::{Result, ensure};

/// Embeddings mapped to two coordinates per sample, with a name for each axis.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaneProjection {
    pub points: Vec<[f64; 2]>,
    pub axis_names: [String; 2],
}

/// Projects `[N, D]` float64 embeddings onto the plane.
///
/// A 2-D code is kept as it is and a 1-D code is placed on the horizontal axis. Wider codes are
/// centred and projected onto their first two principal components, computed by SVD. Each
/// component's sign is fixed so that its largest-magnitude loading is positive, which makes the
/// plot independent of the sign the SVD happens to return.
///
/// # Errors
///
/// Fails when `embeddings` is not a matrix with at least one row and one column.
pub fn project_to_plane(embeddings: &Tensor) -> Result<PlaneProjection> {
    let size = embeddings.size();
    ensure!(size.len() == 2, "embeddings must be a matrix [N, D], found shape {size:?}");
    let (rows, dim) = (size[0], size[1]);
    ensure!(rows > 0 && dim > 0, "embeddings must not be empty, found shape {size:?}");

    match dim {
        1 => {
            let values = Vec::<f64>::try_from(&embeddings.flatten(0, -1))?;
            let points = values.into_iter().map(|value| [value, 0.0]).collect();
            Ok(PlaneProjection { points, axis_names: ["z1".to_owned(), String::new()] })
        }
        2 => {
            let points = rows_of(embeddings)?;
            Ok(PlaneProjection { points, axis_names: ["z1".to_owned(), "z2".to_owned()] })
        }
        _ => principal_components(embeddings),
    }
}

fn principal_components(embeddings: &Tensor) -> Result<PlaneProjection> {
    let centred = embeddings - embeddings.mean_dim(0, true, Kind::Double);
    let (_, singular_values, right_vectors) = centred.f_svd(true, true)?;

    // `right_vectors` is `[D, k]` with k = min(N, D). A single row leaves a single component.
    let components = right_vectors.size()[1].min(2);
    let raw_loadings = right_vectors.narrow(1, 0, components);
    let largest = raw_loadings.abs().argmax(0, true);
    let signs = raw_loadings.gather(0, &largest, false).sign();
    let signs = signs.where_self(&signs.ne(0.0), &signs.ones_like());
    let loadings = raw_loadings * signs;

    let mut coordinates = centred.mm(&loadings);
    if components < 2 {
        coordinates = Tensor::cat(&[coordinates.shallow_clone(), coordinates.zeros_like()], 1);
    }

    let variance = singular_values.square();
    let total = variance.sum(Kind::Double).double_value(&[]);
    let axis_names = [0, 1].map(|component| {
        let share = if component < components && total > 0.0 {
            variance.double_value(&[component]) / total
        } else {
            0.0
        };
        format!("PC{} ({:.1}% of variance)", component + 1, 100.0 * share)
    });
    Ok(PlaneProjection { points: rows_of(&coordinates)?, axis_names })
}

fn rows_of(coordinates: &Tensor) -> Result<Vec<[f64; 2]>> {
    let values = Vec::<f64>::try_from(&coordinates.contiguous().flatten(0, -1))?;
    Ok(values.chunks_exact(2).map(|pair| [pair[0], pair[1]]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::matrix;

    #[test]
    fn two_dimensional_code_is_kept() {
        let embeddings = matrix(&[vec![1.0, 2.0], vec![-3.0, 4.5]]);

        let projection = project_to_plane(&embeddings).unwrap();

        assert_eq!(projection.points, [[1.0, 2.0], [-3.0, 4.5]]);
        assert_eq!(projection.axis_names, ["z1", "z2"]);
    }

    #[test]
    fn pca_recovers_dominant_directions() {
        // Points spread 10 along (1, 1, 0) / sqrt 2 and 1 along z: PC1 is that diagonal.
        let rows: Vec<Vec<f64>> =
            (-5..=5).flat_map(|i| [-1.0, 1.0].map(|z| vec![i as f64, i as f64, z])).collect();

        let projection = project_to_plane(&matrix(&rows)).unwrap();

        let first = projection.points[0];
        assert!((first[0] + 5.0 * 2f64.sqrt()).abs() < 1e-9, "PC1 of the first point {}", first[0]);
        assert!((first[1].abs() - 1.0).abs() < 1e-9, "PC2 of the first point {}", first[1]);
        assert!(projection.axis_names[0].starts_with("PC1 ("), "{}", projection.axis_names[0]);
    }

    #[test]
    fn pca_signs_are_canonical() {
        let rows = vec![vec![1.0, 0.0, 0.0], vec![-1.0, 0.0, 0.0], vec![0.0, 0.5, 0.0]];
        let negated: Vec<Vec<f64>> =
            rows.iter().map(|row| row.iter().map(|v| -v).collect()).collect();

        let projection = project_to_plane(&matrix(&rows)).unwrap();
        let flipped = project_to_plane(&matrix(&negated)).unwrap();

        for (point, mirrored) in projection.points.iter().zip(&flipped.points) {
            assert!((point[0] + mirrored[0]).abs() < 1e-12);
            assert!((point[1] + mirrored[1]).abs() < 1e-12);
        }
        assert!(projection.points[0][0] > 0.0);
    }

    #[test]
    fn single_sample_projects_to_origin() {
        let projection = project_to_plane(&matrix(&[vec![1.0, 2.0, 3.0]])).unwrap();

        assert_eq!(projection.points, [[0.0, 0.0]]);
    }

    #[test]
    fn projection_rejects_empty_matrix() {
        let error = project_to_plane(&matrix(&[])).unwrap_err();

        assert_eq!(error.message(), "embeddings must not be empty, found shape [0, 0]");
    }
}
