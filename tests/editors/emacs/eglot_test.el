;; -*- lexical-binding: t -*-
;; Runs the README's eglot block against the real codeassist-lsp (fake backend) in batch Emacs:
;; completion-at-point at "value = " inserts the server's suggestion.
(require (quote json))
(defvar ca-result (getenv "CODEASSIST_TEST_RESULT"))
(defun ca-finish (alist)
  (with-temp-file ca-result (insert (json-encode alist)))
  (kill-emacs 0))
(condition-case err
    (progn
      (load (getenv "CODEASSIST_SNIPPET") nil t)
      (let ((file (expand-file-name "eglot_test.py" (getenv "CODEASSIST_WORKDIR"))))
        (with-temp-file file (insert "import os\n\nvalue = \n"))
        (find-file file)
        ;; eglot-ensure connects from post-command-hook, which batch Emacs never runs by itself
        (run-hooks 'post-command-hook)
        (let ((deadline (+ (float-time) 60)))
          (while (and (not (eglot-current-server)) (< (float-time) deadline))
            (accept-process-output nil 0.1)
            (run-hooks 'post-command-hook)))
        (goto-char (point-min)) (forward-line 2) (end-of-line)
        (let ((deadline (+ (float-time) 30)) (line ""))
          (while (and (not (string-match-p "fake_completion" line)) (< (float-time) deadline))
            (ignore-errors (completion-at-point))
            (accept-process-output nil 0.2)
            (setq line (buffer-substring-no-properties (line-beginning-position) (line-end-position))))
          (ca-finish `((connected . ,(if (eglot-current-server) t :json-false)) (line . ,line))))))
  (error (ca-finish `((error . ,(format "%S" err))))))
