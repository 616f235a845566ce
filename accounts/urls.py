from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("", views.home, name="index"),
    path("signup/", views.sign_up, name="signup"),
    path("login/", views.LogInView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),  # POST only (Django 5)
    path("password/", views.PasswordChangeView.as_view(), name="password_change"),
    path("keys/", views.key_list, name="keys"),
    path("keys/new/", views.key_create, name="key_create"),
    path("keys/<int:pk>/created/", views.key_created, name="key_created"),
    path("keys/<int:pk>/edit/", views.key_edit, name="key_edit"),
    path("keys/<int:pk>/revoke/", views.key_revoke, name="key_revoke"),
]
