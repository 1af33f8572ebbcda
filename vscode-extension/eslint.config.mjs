// Flat config: typescript-eslint's recommended rules on the extension and its tests.
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["out/", "dist/", "node_modules/", "e2e/"] },
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-floating-promises": "off",
      eqeqeq: "error",
      "no-console": ["error", { allow: ["log"] }],
    },
  },
);
