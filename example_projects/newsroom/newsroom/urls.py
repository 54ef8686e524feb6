from django.urls import path

from desk import api

urlpatterns = [
    path("api/stories/", api.story_list),
    path("api/stories/with-tags/", api.story_list_with_tags),
    path("api/sections/<int:section_id>/", api.section_detail),
]
