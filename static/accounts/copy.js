// A button with data-copy="<id>" copies that element's text (the key created page: the secret, the quick starts).
document.querySelectorAll("[data-copy]").forEach(function (button) {
  button.addEventListener("click", function () {
    var text = document.getElementById(button.dataset.copy).textContent;
    navigator.clipboard.writeText(text).then(function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 2000);
    }, function () { button.textContent = "Copy failed: select and copy by hand"; });
  });
});
