// Package browsertest drives the web console in headless Chromium
// (chromedp) against a demo federation in the test's process: each role
// logs in and uses its pages, and every page is saved as a screenshot
// (CREDFED_SCREENSHOTS=DIR keeps them, docs/console is the README's).
package browsertest
