/*
 * hungarian suite: the mask2former head's assignment solver
 * (plugins/mask2former/match/hungarian.c, linked into this binary by a rule
 * in Makefile.in) against brute force on every shape up to 8x8 both ways,
 * with tie-heavy integer, real and partly forbidden (+inf) costs; against an
 * independent optimality certificate (no improving alternating cycle or
 * path, by Bellman-Ford) at the sizes Mask2Former uses; empty shapes, large
 * and negative values, refused inputs, textbook cases, and the documented
 * tie rule. Needs no Vulkan device.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../plugins/mask2former/match/hungarian.h"

/* splitmix64: a fixed stream per seed, so a failure names a reproducible
 * matrix. */
static uint64_t rng_state;
static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static int rng_int(int lo, int hi) /* in [lo, hi] */
{
    return lo + (int)(rng_next() % (uint64_t)(hi - lo + 1));
}
static double rng_real(void) /* in [-1, 1) */
{
    return (double)(rng_next() >> 11) * 0x1p-52 - 1.0;
}

/* ---- brute force: every injection of the smaller side into the larger --- */

enum { BF_MAX = 8 };
static const double *bf_cost;
static int bf_rows, bf_cols, bf_small, bf_large, bf_tr;
static double bf_best;

static double bf_at(int s, int l)
{
    return bf_tr ? bf_cost[l * bf_cols + s] : bf_cost[s * bf_cols + l];
}

static void bf_rec(int s, unsigned used, double sum)
{
    if (sum == INFINITY)
        return;
    if (s == bf_small) {
        if (sum < bf_best)
            bf_best = sum;
        return;
    }
    for (int l = 0; l < bf_large; l++)
        if (!(used >> l & 1))
            bf_rec(s + 1, used | 1u << l, sum + bf_at(s, l));
}

/* The optimum over all assignments of size min(rows, cols), +inf when every
 * one of them uses a +inf entry. Sums in the smaller side's order. */
static double brute_force(const double *cost, int rows, int cols)
{
    bf_cost = cost;
    bf_rows = rows;
    bf_cols = cols;
    bf_tr = rows > cols;
    bf_small = bf_tr ? cols : rows;
    bf_large = bf_tr ? rows : cols;
    bf_best = INFINITY;
    bf_rec(0, 0, 0.0);
    return bf_best;
}

/* ---- checks shared by the tests ------------------------------------------ */

/* The assignment is a valid one of the right size, and total is its cost
 * added up in row order (the contract). */
static void check_valid(const double *cost, int rows, int cols, const int *col, double total,
                        const char *what)
{
    int want = rows < cols ? rows : cols, got = 0;
    unsigned char *taken = calloc((size_t)cols + 1, 1);
    ck_assert_ptr_nonnull(taken);
    double sum = 0.0;
    for (int r = 0; r < rows; r++) {
        ck_assert_msg(col[r] >= -1 && col[r] < cols, "%s: row %d -> column %d of %d", what, r,
                      col[r], cols);
        if (col[r] < 0)
            continue;
        ck_assert_msg(!taken[col[r]], "%s: column %d assigned twice", what, col[r]);
        taken[col[r]] = 1;
        got++;
        sum += cost[(size_t)r * (size_t)cols + (size_t)col[r]];
    }
    free(taken);
    ck_assert_msg(got == want, "%s: %d assigned, want min(%d, %d) = %d", what, got, rows, cols,
                  want);
    ck_assert_msg(sum == total, "%s: total %.17g, the assignment costs %.17g", what, total, sum);
    ck_assert_msg(isfinite(total), "%s: total %g", what, total);
}

/* Solve, check validity, and compare with brute force within tol (0: exact). */
static void check_vs_brute(const double *cost, int rows, int cols, double tol, const char *what)
{
    int col[BF_MAX];
    double total = -1.0;
    double best = brute_force(cost, rows, cols);
    int rc = m2f_hungarian(cost, rows, cols, col, &total);
    if (best == INFINITY) {
        ck_assert_msg(rc == -1, "%s: infeasible, yet returned %d", what, rc);
        for (int r = 0; r < rows; r++)
            ck_assert_int_eq(col[r], -1);
        ck_assert(isnan(total));
        return;
    }
    ck_assert_msg(rc == 0, "%s: returned %d, brute force found %g", what, rc, best);
    check_valid(cost, rows, cols, col, total, what);
    ck_assert_msg(fabs(total - best) <= tol, "%s: total %.17g, optimum %.17g", what, total, best);
}

/* fill(cost, n) fills a matrix; every shape 1x1 .. 8x8 and n_seeds seeds. */
static void sweep(void (*fill)(double *, int), int n_seeds, double tol, const char *kind)
{
    double cost[BF_MAX * BF_MAX];
    char what[128];
    for (int rows = 1; rows <= BF_MAX; rows++)
        for (int cols = 1; cols <= BF_MAX; cols++)
            for (int seed = 0; seed < n_seeds; seed++) {
                rng_state = (uint64_t)seed * 1000003u + (uint64_t)rows * 131u + (uint64_t)cols;
                fill(cost, rows * cols);
                snprintf(what, sizeof what, "%s %dx%d seed %d", kind, rows, cols, seed);
                check_vs_brute(cost, rows, cols, tol, what);
            }
}

static void fill_ties(double *c, int n)   /* {0..3}: many equal costs and optima */
{
    for (int k = 0; k < n; k++)
        c[k] = rng_int(0, 3);
}
static void fill_signed(double *c, int n) /* {-9..9} */
{
    for (int k = 0; k < n; k++)
        c[k] = rng_int(-9, 9);
}
static void fill_real(double *c, int n)
{
    for (int k = 0; k < n; k++)
        c[k] = rng_real();
}
static void fill_big(double *c, int n)    /* integers near +-1e12, still exact */
{
    for (int k = 0; k < n; k++)
        c[k] = 1e12 * rng_int(-3, 3) + rng_int(-2, 2);
}
static void fill_inf(double *c, int n)    /* about 40% forbidden */
{
    for (int k = 0; k < n; k++)
        c[k] = rng_int(0, 9) < 4 ? INFINITY : rng_int(-5, 5);
}

START_TEST(test_brute_integer)
{
    sweep(fill_ties, 40, 0.0, "ties");
    sweep(fill_signed, 40, 0.0, "signed");
}
END_TEST

START_TEST(test_brute_real)
{
    sweep(fill_real, 40, 1e-9, "real");
}
END_TEST

START_TEST(test_brute_large_values)
{
    sweep(fill_big, 20, 0.0, "1e12");
}
END_TEST

/* +inf is "not allowed": the optimum over the finite assignments when one
 * exists, -1 when none does (the sweep meets both). */
START_TEST(test_brute_inf)
{
    sweep(fill_inf, 40, 0.0, "inf");
}
END_TEST

/* ---- an optimality certificate for sizes brute force cannot reach --------
 * Work on the smaller side S (all matched) and the larger L. Moving the
 * item s of S from its l0 = sigma(s) to l costs w(s, l) - w(s, l0): an
 * edge l0 -> l. An assignment of S is optimal iff no cycle of such moves is
 * negative and no path of them ending at a free l is (the path's first l0
 * is freed, so both keep an assignment of S). Bellman-Ford from every node
 * at distance 0 finds both; integer costs make it exact. */
static void check_certificate(const double *cost, int rows, int cols, const int *col,
                              const char *what)
{
    int tr = rows > cols, ns = tr ? cols : rows, nl = tr ? rows : cols;
    int *sigma = malloc(sizeof(int) * (size_t)ns);
    int *owner = malloc(sizeof(int) * (size_t)nl);
    double *dist = malloc(sizeof(double) * (size_t)nl);
    ck_assert(sigma && owner && dist);
    for (int l = 0; l < nl; l++)
        owner[l] = -1;
    for (int r = 0; r < rows; r++)
        if (col[r] >= 0) {
            int s = tr ? col[r] : r, l = tr ? r : col[r];
            sigma[s] = l;
            owner[l] = s;
        }
#define W(s, l) (tr ? cost[(size_t)(l) * (size_t)cols + (size_t)(s)] \
                    : cost[(size_t)(s) * (size_t)cols + (size_t)(l)])
    for (int l = 0; l < nl; l++)
        dist[l] = 0.0;
    int changed = 1, rounds = 0;
    while (changed && rounds <= nl) {
        changed = 0;
        rounds++;
        for (int s = 0; s < ns; s++) {
            int l0 = sigma[s];
            double base = W(s, l0);
            for (int l = 0; l < nl; l++) {
                double d = dist[l0] + (W(s, l) - base);
                if (l != l0 && d < dist[l]) {
                    dist[l] = d;
                    changed = 1;
                }
            }
        }
    }
    ck_assert_msg(!changed, "%s: a negative cycle of moves: not optimal", what);
    for (int l = 0; l < nl; l++)
        ck_assert_msg(owner[l] >= 0 || dist[l] >= 0.0,
                      "%s: moves ending at free %d gain %g: not optimal", what, l, -dist[l]);
#undef W
    free(sigma);
    free(owner);
    free(dist);
}

START_TEST(test_certificate)
{
    static const int shapes[][2] = {{100, 50}, {50, 100}, {64, 64}, {200, 100},
                                    {100, 1},  {1, 100},  {100, 7}, {33, 97}};
    static const int ranges[] = {3, 1000, 1000000};
    char what[128];
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (size_t q = 0; q < sizeof ranges / sizeof ranges[0]; q++)
            for (int seed = 0; seed < 3; seed++) {
                int rows = shapes[k][0], cols = shapes[k][1];
                double *cost = malloc(sizeof(double) * (size_t)rows * (size_t)cols);
                int *col = malloc(sizeof(int) * (size_t)rows);
                ck_assert(cost && col);
                rng_state = (uint64_t)seed * 7919u + k * 104729u + q;
                for (int i = 0; i < rows * cols; i++)
                    cost[i] = rng_int(-ranges[q], ranges[q]);
                double total = 0.0;
                snprintf(what, sizeof what, "%dx%d range %d seed %d", rows, cols, ranges[q], seed);
                ck_assert_int_eq(m2f_hungarian(cost, rows, cols, col, &total), 0);
                check_valid(cost, rows, cols, col, total, what);
                check_certificate(cost, rows, cols, col, what);
                free(cost);
                free(col);
            }
}
END_TEST

/* ---- edges and refusals --------------------------------------------------- */

START_TEST(test_empty)
{
    int col[5] = {7, 7, 7, 7, 7};
    double total = -1.0;
    /* No targets: every query is "no object". cost may be NULL. */
    ck_assert_int_eq(m2f_hungarian(NULL, 5, 0, col, &total), 0);
    for (int r = 0; r < 5; r++)
        ck_assert_int_eq(col[r], -1);
    ck_assert(total == 0.0);
    /* No rows: nothing to write; col_of_row may be NULL. */
    total = -1.0;
    ck_assert_int_eq(m2f_hungarian(NULL, 0, 4, NULL, &total), 0);
    ck_assert(total == 0.0);
    total = -1.0;
    ck_assert_int_eq(m2f_hungarian(NULL, 0, 0, NULL, &total), 0);
    ck_assert(total == 0.0);
    /* total is optional. */
    const double one[1] = {3.5};
    ck_assert_int_eq(m2f_hungarian(one, 1, 1, col, NULL), 0);
    ck_assert_int_eq(col[0], 0);
}
END_TEST

/* A refusal leaves every row -1 and total NaN. */
static void expect_refused(const double *cost, int rows, int cols, const char *what)
{
    int col[16];
    for (int r = 0; r < 16; r++)
        col[r] = 5;
    double total = 0.0;
    ck_assert_msg(m2f_hungarian(cost, rows, cols, col, &total) == -1, "%s: accepted", what);
    for (int r = 0; r < rows && r < 16; r++)
        ck_assert_msg(col[r] == -1, "%s: row %d -> %d after a refusal", what, r, col[r]);
    ck_assert_msg(isnan(total), "%s: total %g after a refusal", what, total);
}

START_TEST(test_refused)
{
    double c[12];
    for (int pos = 0; pos < 12; pos++) {
        for (int k = 0; k < 12; k++)
            c[k] = k;
        c[pos] = NAN;
        expect_refused(c, 3, 4, "NaN in 3x4");
        expect_refused(c, 4, 3, "NaN in 4x3");
        c[pos] = -INFINITY;
        expect_refused(c, 3, 4, "-inf in 3x4");
        c[pos] = 1e201;
        expect_refused(c, 4, 3, "1e201 in 4x3");
        c[pos] = -1e201;
        expect_refused(c, 3, 4, "-1e201 in 3x4");
    }
    /* The limits themselves are accepted (and the sums stay exact). */
    for (int k = 0; k < 12; k++)
        c[k] = k % 3 ? M2F_HUNGARIAN_MAX_COST : -M2F_HUNGARIAN_MAX_COST;
    check_vs_brute(c, 3, 4, 0.0, "+-MAX_COST 3x4");
    check_vs_brute(c, 4, 3, 0.0, "+-MAX_COST 4x3");
    double total;

    /* Infeasible: a row of +inf; two rows whose only finite column is the
     * same one; the transposed case (two columns both only row 0's). */
    double inf_row[6] = {1, 2, 3, INFINITY, INFINITY, INFINITY};
    expect_refused(inf_row, 2, 3, "a row of +inf");
    double shared[6] = {1, INFINITY, INFINITY, 2, INFINITY, INFINITY};
    expect_refused(shared, 2, 3, "two rows, one finite column");
    double shared_t[6] = {1, 2, INFINITY, INFINITY, INFINITY, INFINITY};
    expect_refused(shared_t, 3, 2, "two columns, one finite row");
    double all_inf[4] = {INFINITY, INFINITY, INFINITY, INFINITY};
    expect_refused(all_inf, 2, 2, "all +inf");

    /* Bad arguments. */
    expect_refused(c, -1, 3, "negative rows");
    expect_refused(c, 3, -1, "negative columns");
    expect_refused(NULL, 3, 4, "NULL cost");
    ck_assert_int_eq(m2f_hungarian(c, 3, 4, NULL, &total), -1);
    ck_assert(isnan(total));
}
END_TEST

/* +inf entries that a finite assignment avoids, at once and at the size the
 * head uses: the forced choices are made and the rest is optimal. */
START_TEST(test_inf_avoided)
{
    /* Row r may only take columns r and r+1 (a band): a unique path. */
    enum { N = 40 };
    static double c[N * (N + 1)];
    int col[N];
    double total;
    for (int r = 0; r < N; r++)
        for (int j = 0; j <= N; j++)
            c[r * (N + 1) + j] = j == r ? 1.0 : j == r + 1 ? 0.0 : INFINITY;
    /* Every row one to the right (cost 0) is the unique optimum. */
    ck_assert_int_eq(m2f_hungarian(c, N, N + 1, col, &total), 0);
    check_valid(c, N, N + 1, col, total, "band");
    ck_assert(total == 0.0);
    for (int r = 0; r < N; r++)
        ck_assert_int_eq(col[r], r + 1);
    /* Forbid the last row's right step: it takes its own column, and then
     * every row above it must too (a chain of forced moves). */
    c[(N - 1) * (N + 1) + N] = INFINITY;
    ck_assert_int_eq(m2f_hungarian(c, N, N + 1, col, &total), 0);
    ck_assert(total == (double)N);
    for (int r = 0; r < N; r++)
        ck_assert_int_eq(col[r], r);
}
END_TEST

/* Textbook cases with unique optima. */
START_TEST(test_hand)
{
    /* scipy.optimize.linear_sum_assignment's documentation example. */
    const double a[9] = {4, 1, 3, 2, 0, 5, 3, 2, 2};
    int col[4];
    double total;
    ck_assert_int_eq(m2f_hungarian(a, 3, 3, col, &total), 0);
    ck_assert_int_eq(col[0], 1);
    ck_assert_int_eq(col[1], 0);
    ck_assert_int_eq(col[2], 2);
    ck_assert(total == 5.0);
    /* The 4x4 worked example of the Hungarian method found in many
     * tutorials (e.g. hungarianalgorithm.com): optimum 140. */
    const double b[16] = {82, 83, 69, 92, 77, 37, 49, 92, 11, 69, 5, 86, 8, 9, 98, 23};
    ck_assert_int_eq(m2f_hungarian(b, 4, 4, col, &total), 0);
    ck_assert_int_eq(col[0], 2);
    ck_assert_int_eq(col[1], 1);
    ck_assert_int_eq(col[2], 0);
    ck_assert_int_eq(col[3], 3);
    ck_assert(total == 140.0);
    /* Its first three columns as a 4x3 problem: every column gets a row,
     * row 0 none; the optimum 8 + 37 + 5 = 50 is unique. */
    const double b3[12] = {82, 83, 69, 77, 37, 49, 11, 69, 5, 8, 9, 98};
    ck_assert_int_eq(m2f_hungarian(b3, 4, 3, col, &total), 0);
    ck_assert_int_eq(col[0], -1);
    ck_assert_int_eq(col[1], 1);
    ck_assert_int_eq(col[2], 2);
    ck_assert_int_eq(col[3], 0);
    ck_assert(total == 50.0);
}
END_TEST

/* The tie rule (hungarian.h): all-equal costs give the diagonal, both ways;
 * and a random tie-heavy matrix gives the same answer every time, from a
 * different buffer too. */
START_TEST(test_determinism)
{
    enum { R = 30, C = 20 };
    static double z[R * C], c1[R * C], c2[R * C];
    int a[R], b[R];
    double ta, tb;
    ck_assert_int_eq(m2f_hungarian(z, R, C, a, &ta), 0);
    for (int r = 0; r < R; r++)
        ck_assert_int_eq(a[r], r < C ? r : -1);
    ck_assert_int_eq(m2f_hungarian(z, C, R, a, &ta), 0);
    for (int r = 0; r < C; r++)
        ck_assert_int_eq(a[r], r);

    for (int seed = 0; seed < 10; seed++) {
        rng_state = (uint64_t)seed;
        for (int k = 0; k < R * C; k++)
            c1[k] = rng_int(0, 1);
        memcpy(c2, c1, sizeof c1);
        for (int shape = 0; shape < 2; shape++) {
            int rows = shape ? C : R, cols = shape ? R : C;
            ck_assert_int_eq(m2f_hungarian(c1, rows, cols, a, &ta), 0);
            ck_assert_int_eq(m2f_hungarian(c2, rows, cols, b, &tb), 0);
            ck_assert(ta == tb);
            ck_assert_int_eq(memcmp(a, b, sizeof(int) * (size_t)rows), 0);
            ck_assert_int_eq(m2f_hungarian(c1, rows, cols, b, &tb), 0);
            ck_assert_int_eq(memcmp(a, b, sizeof(int) * (size_t)rows), 0);
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hungarian");
    TCase *tc = tcase_create("assignment");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_brute_integer);
    tcase_add_test(tc, test_brute_real);
    tcase_add_test(tc, test_brute_large_values);
    tcase_add_test(tc, test_brute_inf);
    tcase_add_test(tc, test_certificate);
    tcase_add_test(tc, test_empty);
    tcase_add_test(tc, test_refused);
    tcase_add_test(tc, test_inf_avoided);
    tcase_add_test(tc, test_hand);
    tcase_add_test(tc, test_determinism);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
