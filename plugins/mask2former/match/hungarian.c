/*
 * hungarian.c - the exact rectangular assignment solver behind the
 * mask2former loss's per-image matching (hungarian.h has the contract).
 *
 * The method is the shortest-augmenting-path form of the Hungarian
 * algorithm with dual potentials (Kuhn 1955, Munkres 1957; Jonker and
 * Volgenant 1987 for the augmenting-path view; the O(n^3) form is the one
 * e-maxx.ru teaches): rows are added one at a time, each by a Dijkstra
 * search over reduced costs a[i][j] - u[i] - v[j] >= 0 from the new row to a
 * free column, after which the potentials are raised by the distances and
 * the path is flipped. With n rows <= m columns that is n searches of at
 * most n steps over m columns, O(n^2 m), and every matched row is optimal
 * for the rows added so far, so the last search leaves an optimal
 * assignment. Rectangular problems need nothing more, as long as the
 * smaller side is the one being added: hence the transpose when
 * n_rows > n_cols (done once into the scratch, so that the inner loop reads
 * a contiguous row either way).
 *
 * +inf entries are "forbidden edges": a reduced cost through one stays
 * +inf, and a search that finds every free column at +inf proves (the
 * previous rows being matched optimally and finitely) that no finite
 * assignment covers the rows added so far, which is the infeasible case.
 */
#include "hungarian.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Every entry must be finite within the limit or +inf; NaN fails both
 * comparisons and so is refused too. */
static int costs_ok(const double *cost, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        double c = cost[k];
        if (!(c >= -M2F_HUNGARIAN_MAX_COST && c <= M2F_HUNGARIAN_MAX_COST) && c != INFINITY)
            return 0;
    }
    return 1;
}

int m2f_hungarian(const double *cost, int n_rows, int n_cols, int *col_of_row, double *total)
{
    if (total)
        *total = NAN;
    if (col_of_row)
        for (int r = 0; r < n_rows; r++)
            col_of_row[r] = -1;
    if (n_rows < 0 || n_cols < 0 || (n_rows > 0 && !col_of_row))
        return -1;
    if (n_rows == 0 || n_cols == 0) {
        if (total)
            *total = 0.0;
        return 0;
    }
    /* Loop bounds below are `j <= m` over ints, and the scratch is about
     * 5 m + n m doubles: refuse what would overflow either. */
    if (!cost || n_rows == INT_MAX || n_cols == INT_MAX ||
        (size_t)n_rows > SIZE_MAX / 64 / (size_t)n_cols)
        return -1;
    size_t nm = (size_t)n_rows * (size_t)n_cols;
    if (!costs_ok(cost, nm))
        return -1;

    /* The working problem: n rows added one by one, m >= n columns. */
    const int tr = n_rows > n_cols;
    const int n = tr ? n_cols : n_rows, m = tr ? n_rows : n_cols;

    /* One allocation: doubles first (u: n+1, v, minv: m+1 each, then the
     * transposed matrix), ints (p, way: m+1 each), then bytes (used: m+1).
     * Index 0 of the column arrays is the virtual column the search starts
     * from; rows are numbered from 1 so that p[j] == 0 means "free". */
    size_t n_dbl = (size_t)n + 1 + 2 * ((size_t)m + 1) + (tr ? nm : 0);
    size_t n_int = 2 * ((size_t)m + 1);
    char *mem = malloc(n_dbl * sizeof(double) + n_int * sizeof(int) + (size_t)m + 1);
    if (!mem)
        return -1;
    double *u = (double *)mem, *v = u + n + 1, *minv = v + m + 1;
    double *at = minv + m + 1;
    int *p = (int *)(mem + n_dbl * sizeof(double)), *way = p + m + 1;
    unsigned char *used = (unsigned char *)(way + m + 1);

    /* a: n x m row-major, a[i * m + j] for row i and column j from 0. */
    const double *a = cost;
    if (tr) {
        for (int r = 0; r < n_rows; r++)
            for (int c = 0; c < n_cols; c++)
                at[(size_t)c * (size_t)m + (size_t)r] = cost[(size_t)r * (size_t)n_cols + (size_t)c];
        a = at;
    }
    for (int i = 0; i <= n; i++)
        u[i] = 0.0;
    for (int j = 0; j <= m; j++) {
        v[j] = 0.0;
        p[j] = 0;
    }

    for (int i = 1; i <= n; i++) {
        /* Dijkstra from row i: minv[j] is the shortest reduced distance
         * found to column j, way[j] the column before it on that path. */
        p[0] = i;
        int j0 = 0;
        for (int j = 0; j <= m; j++) {
            minv[j] = INFINITY;
            used[j] = 0;
        }
        do {
            used[j0] = 1;
            const int i0 = p[j0];
            const double *ai = a + (size_t)(i0 - 1) * (size_t)m;
            const double ui = u[i0];
            double delta = INFINITY;
            int j1 = -1;
            /* Strict < in both minima: among equal values the lowest column
             * wins, which is the documented tie rule. */
            for (int j = 1; j <= m; j++) {
                if (used[j])
                    continue;
                double cur = ai[j - 1] - ui - v[j];
                if (cur < minv[j]) {
                    minv[j] = cur;
                    way[j] = j0;
                }
                if (minv[j] < delta) {
                    delta = minv[j];
                    j1 = j;
                }
            }
            if (j1 < 0) {
                /* Every column not yet reached is reachable only through
                 * +inf: no finite assignment covers rows 1..i. */
                free(mem);
                return -1;
            }
            /* Shift the potentials so that the reduced costs stay >= 0 and
             * the tree's edges stay at 0; unreached columns' tentative
             * distances shrink by the same amount. */
            for (int j = 0; j <= m; j++) {
                if (used[j]) {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
        } while (p[j0] != 0);
        /* Flip the path back to the virtual column: each column on it
         * takes the row of the column before it, the last one row i. */
        do {
            int j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
        } while (j0);
    }

    for (int j = 1; j <= m; j++) {
        if (!p[j])
            continue;
        if (tr)
            col_of_row[j - 1] = p[j] - 1;
        else
            col_of_row[p[j] - 1] = j - 1;
    }
    free(mem);
    if (total) {
        double s = 0.0;
        for (int r = 0; r < n_rows; r++)
            if (col_of_row[r] >= 0)
                s += cost[(size_t)r * (size_t)n_cols + (size_t)col_of_row[r]];
        *total = s;
    }
    return 0;
}
