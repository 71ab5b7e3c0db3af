/*
 * hungarian.h - exact minimum-cost rectangular assignment for the
 * mask2former head: its loss matches each image's queries to its targets
 * one to one (Carion et al. 2020, DETR; Cheng et al. 2022, Mask2Former) in a
 * host node, on the CPU, once per image and step, so the solver is exact,
 * O(n^3), and allocates once per call.
 *
 *     // cost: 100 queries x 7 targets, row-major, class + mask + dice terms
 *     int tgt[100];
 *     double total;
 *     if (m2f_hungarian(cost, 100, 7, tgt, &total))
 *         return fail("matching: NaN or -inf cost, no finite assignment, or no memory");
 *     // tgt[q] is query q's target, or -1 (7 queries get one: "no object"
 *     // for the other 93)
 *
 * Plugin-internal: the plugin is built with hidden visibility and a version
 * script, so nothing here is exported; the m2f_ prefix keeps it apart from
 * vpeft's own vp_ names in the tests that link it directly.
 */
#ifndef M2F_HUNGARIAN_H
#define M2F_HUNGARIAN_H

/*
 * Minimum-cost assignment of the rows of an n_rows x n_cols cost matrix
 * (row-major doubles, cost[r * n_cols + c]) to its columns, as
 * scipy.optimize.linear_sum_assignment: with n_rows >= n_cols every column
 * gets a distinct row; with fewer rows every row gets a distinct column.
 *
 * cost: may be NULL when n_rows or n_cols is 0; read only.
 * col_of_row: n_rows ints (may be NULL when n_rows is 0); on return
 *     col_of_row[r] is row r's column or -1 (always -1 on failure).
 * total: may be NULL; receives the sum of the chosen costs, added up in row
 *     order from the matrix itself (exact for integer costs below 2^53);
 *     0 for an empty assignment, NaN on failure.
 *
 * Costs: finite values with |c| <= M2F_HUNGARIAN_MAX_COST, or +inf meaning
 * "not allowed". Returns 0, or -1 (outputs as above) when
 *   - n_rows or n_cols is negative or INT_MAX, or a pointer needed is
 *     NULL;
 *   - a cost is NaN or -inf, or finite beyond M2F_HUNGARIAN_MAX_COST (the
 *     dual potentials can grow to about min(n_rows, n_cols) times the cost
 *     range, and must not overflow);
 *   - every assignment of the full size min(n_rows, n_cols) uses a +inf
 *     entry (infeasible, as scipy's ValueError);
 *   - its one scratch allocation fails.
 *
 * Ties: the result is a function of the input alone. Among several optimal
 * assignments the one returned is the one the following procedure reaches:
 * the smaller side is taken as the "rows" (the matrix transposed when
 * n_rows > n_cols); those rows are added in index order, each by a shortest
 * augmenting path (Dijkstra on reduced costs), and every minimum taken in
 * that search takes the lowest column index among equal values.
 *
 * Time O(min^2 * max) for min = min(n_rows, n_cols), max the other; memory
 * O(max) doubles, plus a transposed copy of the matrix when
 * n_rows > n_cols. Reentrant: no global state.
 */
int m2f_hungarian(const double *cost, int n_rows, int n_cols, int *col_of_row, double *total);

/* The largest finite cost magnitude m2f_hungarian accepts. */
#define M2F_HUNGARIAN_MAX_COST 1e200

#endif /* M2F_HUNGARIAN_H */
