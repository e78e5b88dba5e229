//! Nearest neighbours by cosine similarity, shared by the `knn` and `anomaly` evaluators.

use pretext_plugin_api::tch::Tensor;
use pretext_plugin_api::{Result, ensure};

/// Number of query rows compared with the reference rows at once, which bounds the similarity
/// matrix to `QUERY_CHUNK x reference rows` float64 values.
const QUERY_CHUNK: i64 = 1024;

/// Norm below which a row counts as zero and is left unscaled, so that it stays a zero vector.
const MIN_NORM: f64 = 1e-12;

/// The `k` nearest reference rows of each query row, most similar first.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    /// `k` per query row, row-major: the cosine similarity of each neighbour.
    pub similarities: Vec<f64>,
    /// `k` per query row, row-major: the reference row index of each neighbour.
    pub indices: Vec<usize>,
    pub k: usize,
}

impl Neighbours {
    /// Similarities of query row `row`'s neighbours.
    pub fn similarities_of(&self, row: usize) -> &[f64] {
        &self.similarities[row * self.k..(row + 1) * self.k]
    }

    /// Reference indices of query row `row`'s neighbours.
    pub fn indices_of(&self, row: usize) -> &[usize] {
        &self.indices[row * self.k..(row + 1) * self.k]
    }
}

/// Scales each row of a `[N, D]` float64 tensor to unit L2 norm. Zero rows stay zero.
pub fn normalize_rows(rows: &Tensor) -> Result<Tensor> {
    let norms = rows.f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?;
    let norms = norms.f_clamp_min(MIN_NORM)?;
    Ok(rows.f_div(&norms)?)
}

/// Finds the `k` reference rows with the highest cosine similarity to each query row.
///
/// Both tensors are `[N, D]` float64 with the same `D`. Ties between equal similarities go to
/// the lower reference index.
///
/// # Errors
///
/// Fails when `k` is 0 or exceeds the number of reference rows, or when the widths differ.
pub fn nearest_by_cosine(reference: &Tensor, queries: &Tensor, k: usize) -> Result<Neighbours> {
    let (reference_rows, queries_rows) = (reference.size()[0], queries.size()[0]);
    ensure!(k >= 1, "k must be at least 1, found {k}");
    ensure!(
        k as i64 <= reference_rows,
        "k is {k} but there are only {reference_rows} reference embeddings; lower k"
    );
    ensure!(
        reference.size()[1] == queries.size()[1],
        "reference embeddings have {} columns but query embeddings have {}",
        reference.size()[1],
        queries.size()[1]
    );

    let reference = normalize_rows(reference)?;
    let queries = normalize_rows(queries)?;
    let mut similarities = Vec::with_capacity(queries_rows as usize * k);
    let mut indices = Vec::with_capacity(queries_rows as usize * k);
    let mut start = 0;
    while start < queries_rows {
        let length = QUERY_CHUNK.min(queries_rows - start);
        let chunk = queries.f_narrow(0, start, length)?.f_matmul(&reference.f_tr()?)?;
        let values = Vec::<f64>::try_from(&chunk.f_flatten(0, -1)?)?;
        for row in values.chunks(reference_rows as usize) {
            for index in top_k(row, k) {
                similarities.push(row[index]);
                indices.push(index);
            }
        }
        start += length;
    }
    Ok(Neighbours { similarities, indices, k })
}

/// Returns the indices of the `k` largest values, largest first, lower index first on ties.
fn top_k(values: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    let descending = |a: &usize, b: &usize| values[*b].total_cmp(&values[*a]).then(a.cmp(b));
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, descending);
        order.truncate(k);
    }
    order.sort_unstable_by(descending);
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::matrix;

    #[test]
    fn nearest_orders_by_similarity() {
        let reference = matrix(&[vec![1.0, 0.0], vec![0.0, 2.0], vec![1.0, 1.0], vec![-1.0, 0.0]]);
        let queries = matrix(&[vec![3.0, 0.1], vec![0.0, -1.0]]);

        let neighbours = nearest_by_cosine(&reference, &queries, 2).unwrap();

        assert_eq!(neighbours.indices_of(0), [0, 2]);
        assert_eq!(neighbours.indices_of(1), [0, 3]);
        let expected = 3.0 / (9.01f64).sqrt();
        assert!((neighbours.similarities_of(0)[0] - expected).abs() < 1e-12);
        assert!(neighbours.similarities_of(1)[0].abs() < 1e-12);
    }

    #[test]
    fn top_k_breaks_ties_by_index() {
        assert_eq!(top_k(&[0.5, 0.9, 0.5, 0.9, 0.1], 3), [1, 3, 0]);
        assert_eq!(top_k(&[0.2, 0.1], 2), [0, 1]);
    }

    #[test]
    fn nearest_rejects_large_k() {
        let reference = matrix(&[vec![1.0, 0.0]]);

        let error = nearest_by_cosine(&reference, &reference, 2).unwrap_err();

        assert_eq!(error.message(), "k is 2 but there are only 1 reference embeddings; lower k");
    }

    #[test]
    fn normalize_keeps_zero_rows() {
        let rows = normalize_rows(&matrix(&[vec![3.0, 4.0], vec![0.0, 0.0]])).unwrap();

        let values = Vec::<f64>::try_from(rows.flatten(0, -1)).unwrap();
        assert_eq!(values, [0.6, 0.8, 0.0, 0.0]);
    }
}
